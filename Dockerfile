# raftkv image: kvd (the server) and kvctl (the CLI) on a slim Debian base,
# running as an unprivileged user with its data in a volume. Configure kvd
# with KVD_* environment variables (see README.md); docker-compose.yml runs
# a 3-node cluster from it.
#
# The default target builds from source in a Rust image (what a machine
# that can pull images uses). `--target prebuilt` instead takes stripped
# kvd and kvctl from the build context (`make image-offline` builds them on
# the host and passes a context holding just those two files): it never
# touches the Rust stage, so it builds where no registry is reachable, on
# any `debian:bookworm-slim` the engine has.

FROM debian:bookworm-slim AS base
RUN groupadd --system --gid 10001 raftkv \
    && useradd --system --uid 10001 --gid raftkv --home-dir /var/lib/raftkv --shell /usr/sbin/nologin raftkv \
    && mkdir -p /var/lib/raftkv \
    && chown raftkv:raftkv /var/lib/raftkv
ENV KVD_DATA_DIR=/var/lib/raftkv \
    KVD_LISTEN_CLIENT=0.0.0.0:2379 \
    KVD_LISTEN_PEER=0.0.0.0:2380 \
    KVD_LISTEN_METRICS=0.0.0.0:2381 \
    KVCTL_ENDPOINTS=127.0.0.1:2379
VOLUME ["/var/lib/raftkv"]
EXPOSE 2379 2380 2381
ENTRYPOINT ["kvd"]

# Binaries built elsewhere (the build context holds kvd and kvctl).
FROM base AS prebuilt
COPY kvd kvctl /usr/local/bin/
USER raftkv

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
    && mkdir -p /out \
    && cp target/release/kvd target/release/kvctl /out/ \
    && strip /out/kvd /out/kvctl

FROM base AS runtime
COPY --from=builder /out/kvd /out/kvctl /usr/local/bin/
USER raftkv
