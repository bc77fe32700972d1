# syntax=docker/dockerfile:1
#
# raftkv image: kvd (the server) and kvctl (the CLI) on a slim Debian base,
# running as an unprivileged user with its data in a volume. Configure kvd
# with KVD_* environment variables (see README.md); docker-compose.yml runs
# a 3-node cluster from it.

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
    && cp target/release/kvd target/release/kvctl /out/

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 raftkv \
    && useradd --system --uid 10001 --gid raftkv --home-dir /var/lib/raftkv --shell /usr/sbin/nologin raftkv \
    && mkdir -p /var/lib/raftkv \
    && chown raftkv:raftkv /var/lib/raftkv
COPY --from=builder /out/kvd /out/kvctl /usr/local/bin/
USER raftkv
ENV KVD_DATA_DIR=/var/lib/raftkv \
    KVD_LISTEN_CLIENT=0.0.0.0:2379 \
    KVD_LISTEN_PEER=0.0.0.0:2380 \
    KVD_LISTEN_METRICS=0.0.0.0:2381 \
    KVCTL_ENDPOINTS=127.0.0.1:2379
VOLUME ["/var/lib/raftkv"]
EXPOSE 2379 2380 2381
ENTRYPOINT ["kvd"]
