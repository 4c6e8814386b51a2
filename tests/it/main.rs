//! Integration tests, compiled as one test binary (`cargo test --test it`) so the crate and
//! the support code are built once instead of once per file.

mod support;

mod agent_tests;
mod caspac_tests;
mod cli_tests;
mod cluster_tests;
mod cluster_tls_tests;
mod command_driver_tests;
mod conn_tests;
mod executor_tests;
mod fault_matrix_tests;
mod messages_tests;
mod metrics_tests;
mod perf_tests;
mod psor_fault_tests;
mod psor_tests;
mod redaction_tests;
mod region_tests;
mod report_tests;
mod rollout_fault_tests;
mod rollout_status_tests;
mod rollout_tests;
mod script_tests;
mod state_tests;
mod support_smoke;
mod vendor_tests;
mod work_tests;
