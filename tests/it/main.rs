//! Integration tests, compiled as one test binary (`cargo test --test it`) so the crate and
//! the support code are built once instead of once per file.

mod support;

mod support_smoke;
