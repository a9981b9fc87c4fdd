# syntax=docker/dockerfile:1
#
# Tenantry container image.
#
#   docker build -t tenantry .
#   docker run --rm -e DATABASE_URL=postgres://... -p 50051:50051 -p 8080:8080 tenantry serve
#
# Stage 1 (builder) compiles the dependencies from Cargo.toml/Cargo.lock alone against
# dummy sources, so that layer is reused for as long as the manifests do not change; then
# it compiles the real sources. No extra tool (cargo-chef) is downloaded for this.
# Stage 2 (runtime) is debian bookworm-slim with ca-certificates and the binary, run as a
# non-root user.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

############################ builder ############################
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder

# The full (non-slim) rust image already has gcc/make; cmake is added for C dependencies
# (e.g. aws-lc-sys) whose build scripts may want it. protoc is NOT needed: build.rs uses
# the pure-Rust protox compiler. No database is needed either: queries are runtime-checked.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1. Dependencies only: manifests + dummy lib/bin/build script. This layer is cached
#    until Cargo.toml or Cargo.lock changes. The dummy build.rs makes cargo compile the
#    [build-dependencies] too.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && echo 'fn main() {}' > build.rs \
 && cargo build --release --locked \
 && rm -rf src build.rs

# 2. The real sources (see .dockerignore for what is left out).
COPY . .
# COPY keeps the files' original mtimes, which can be older than the dummy artefacts of
# step 1; drop the crate's own fingerprints so cargo rebuilds it (and re-runs build.rs)
# while keeping every compiled dependency.
RUN rm -rf target/release/.fingerprint/tenantry-* \
 && touch src/main.rs src/lib.rs \
 && if [ -f build.rs ]; then touch build.rs; fi \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/tenantry /out/tenantry

############################ runtime ############################
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ca-certificates: TLS to AWS endpoints, RDS/ElastiCache, the OTLP collector (it also
# brings openssl, which docker-compose's keygen service uses). Versions are not pinned:
# the newest bookworm security updates at build time are wanted.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tenantry \
 && useradd --system --uid 10001 --gid tenantry --home-dir /var/lib/tenantry \
            --shell /usr/sbin/nologin tenantry \
 && install -d -o tenantry -g tenantry -m 0750 /var/lib/tenantry /var/lib/tenantry/keys

COPY --from=builder /out/tenantry /usr/local/bin/tenantry

# In a container the servers must listen on all interfaces (the binary defaults to
# 127.0.0.1). Logs are JSON for CloudWatch / log shippers.
ENV TENANTRY_GRPC_ADDR=0.0.0.0:50051 \
    TENANTRY_HTTP_ADDR=0.0.0.0:8080 \
    TENANTRY_LOG_FORMAT=json \
    RUST_LOG=info

USER 10001:10001
WORKDIR /var/lib/tenantry

# 50051: gRPC (HTTP/2). 8080: REST gateway, /healthz, /readyz, /metrics (the worker: the last three).
EXPOSE 50051 8080

# Liveness without curl: bash (already in the base image) opens a TCP connection with its
# /dev/tcp redirection, sends a bare HTTP/1.0 request for /healthz and requires a 200 on
# the status line. This keeps the image free of curl/wget and their dependencies.
# It applies to `serve` and to `worker`, which serves /healthz, /readyz and /metrics on the
# same TENANTRY_HTTP_ADDR.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && IFS= read -r -t 4 status <&3 && [[ $status == HTTP/1.?' 200'* ]]"]

# The binary handles SIGTERM itself (drain, flush usage, release jobs).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tenantry"]
CMD ["serve"]
