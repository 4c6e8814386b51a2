# pacup, caspac and casstart/casstop/casstate in a small runtime image, for the compose
# rehearsal (compose.yaml, docs/compose.md) on a workstation that can pull images:
#
#   docker build -t pacup:local .
#
# Offline machines (no registry) build an equivalent image with
# scripts/compose-harness.sh instead.
#
# Build arguments: RUST_IMAGE (the builder; any Rust >= 1.85 on Debian bookworm) and
# RUNTIME_IMAGE (Debian bookworm, so the glibc matches the builder's).
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# Dependencies first, in their own layer: rebuilt only when Cargo.toml or Cargo.lock change.
# xtask/ (the `cargo xtask` set-up commands) is a workspace member that the image does not
# build; cargo only needs its manifest and a stub target to load the workspace.
COPY Cargo.toml Cargo.lock ./
COPY xtask/Cargo.toml ./xtask/
RUN mkdir -p src/bin xtask/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > src/bin/caspac.rs \
    && for b in casstart casstop casstate; do echo 'fn main() {}' > src/bin/$b.rs; done \
    && echo 'fn main() {}' > xtask/src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --package pacup \
    && rm -rf src target/release/.fingerprint/pacup-* target/release/deps/pacup-* \
              target/release/deps/libpacup-* target/release/deps/caspac-* \
              target/release/pacup target/release/caspac \
              target/release/deps/casst* target/release/casstart target/release/casstop \
              target/release/casstate
# The sources, and the fixtures they embed (src/resources.rs includes fixtures/resources.json).
COPY fixtures ./fixtures
COPY src ./src
RUN cargo build --release --locked --package pacup \
    && install -m 0755 target/release/pacup target/release/caspac /usr/local/bin/ \
    && install -m 0755 target/release/casstart target/release/casstop target/release/casstate /usr/local/bin/ \
    && pacup --version

FROM ${RUNTIME_IMAGE}
# ca-certificates: rediss:// PSORs with public certificates.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin pacup \
    && mkdir -p /results \
    && chown pacup:pacup /results
# /results is owned by pacup so that the fresh named volume compose.yaml mounts there
# (shared by the load and coordinator services) is writable.
COPY --from=builder /usr/local/bin/pacup /usr/local/bin/caspac /usr/local/bin/
COPY --from=builder /usr/local/bin/casstart /usr/local/bin/casstop /usr/local/bin/casstate /usr/local/bin/
USER pacup
WORKDIR /tmp
CMD ["pacup", "--help"]
