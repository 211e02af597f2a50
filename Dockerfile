# syntax=docker/dockerfile:1
# privatelink-dns container image.
#
#   docker build -t privatelink-dns .
#   docker run --rm -p 5353:5353/udp -p 5353:5353/tcp -p 9153:9153 \
#     -v $PWD/config.toml:/etc/privatelink-dns/config.toml:ro privatelink-dns
#
# The image runs as the fixed non-root UID 65532. The default listen port in the
# deploy/ manifests is 5353 (the load balancer maps 53 to it), so no privilege is
# needed. To bind port 53 inside the container instead, the binary carries the file
# capability cap_net_bind_service; alternatively set the namespaced sysctl
# net.ipv4.ip_unprivileged_port_start=53 (docker run --sysctl, Kubernetes pod
# securityContext.sysctls).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY benches ./benches
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin \
    && rm -rf /var/lib/apt/lists/*
# Cache mounts keep the registry and the build between image builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && mkdir -p /out/bin /out/var/lib/privatelink-dns /out/etc/privatelink-dns \
    && cp target/release/privatelink-dns /out/bin/ \
    && strip /out/bin/privatelink-dns \
    && setcap cap_net_bind_service=+ep /out/bin/privatelink-dns \
    && cp config/privatelink-dns.toml /out/etc/privatelink-dns/example.toml

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/bin/privatelink-dns /usr/local/bin/privatelink-dns
COPY --from=build --chown=65532:65532 /out/var/lib/privatelink-dns /var/lib/privatelink-dns
COPY --from=build /out/etc/privatelink-dns /etc/privatelink-dns
USER 65532:65532
# The cold-start cache (cache-file = "/var/lib/privatelink-dns/snapshot.json").
VOLUME ["/var/lib/privatelink-dns"]
EXPOSE 53/udp 53/tcp 5353/udp 5353/tcp 9153/tcp
# Liveness through the HTTP side ([http] listen = "0.0.0.0:9153"); distroless has
# no shell or curl, so the binary is its own probe client.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/privatelink-dns", "probe", "http://127.0.0.1:9153/healthz"]
ENTRYPOINT ["/usr/local/bin/privatelink-dns"]
CMD ["--config", "/etc/privatelink-dns/config.toml"]
