# syntax=docker/dockerfile:1.7
#
# Portway: one static binary for every role (`portway controller`,
# `portway speaker`, `portway check-config`, ...) in a minimal image.
#
#   docker build -t ghcr.io/portway-dev/portway:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... --push .
#
# Build stage: Alpine's Rust targets musl, where Rust links statically by
# default (crt-static), so the binary needs no libc at run time. TLS is rustls
# (ring), which only needs a C compiler and the musl headers.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
RUN apk add --no-cache musl-dev file
WORKDIR /src
# The whole workspace: cargo needs every member's manifest; .dockerignore
# keeps target/, .git and the docs out of the context.
COPY . .
# The workspace's release profile keeps line tables for backtraces (99 MB
# static binary); the image drops debug info (15-20 MB; panics still name
# functions).
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p portway \
    && cp target/release/portway /portway \
    && file /portway | tee /dev/stderr | grep -Eq 'static(-pie)? linked|statically linked' \
    && /portway --version

# Run stage: distroless "static" has no shell and no libc, only CA
# certificates (BIG-IP TLS verification against system roots), /etc/passwd
# with the `nonroot` user (65532) and tzdata.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="portway" \
      org.opencontainers.image.description="A Kubernetes cloud-controller-manager for clusters without a cloud" \
      org.opencontainers.image.source="https://github.com/portway-dev/portway" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /portway /usr/local/bin/portway
# Non-root by default: the controller needs no privilege at all. The speaker
# DaemonSet overrides this with runAsUser: 0 plus only NET_RAW and NET_ADMIN,
# because Kubernetes gives a non-root process no effective capabilities
# (no ambient capabilities), and raw ARP/NDP sockets need NET_RAW.
USER 65532:65532
# 10258/tcp: controller /healthz /livez /readyz /metrics (plain HTTP).
# 7947/udp: speaker gossip (l2.gossipPort).
EXPOSE 10258/tcp 7947/udp
ENTRYPOINT ["/usr/local/bin/portway"]
CMD ["--help"]
