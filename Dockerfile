# Flotilla's container image: every role (`flotilla coordinator|worker|resource-manager|gateway`)
# and the client, from one binary.
#
#   docker build -t flotilla:dev .
#   docker run --rm -p 8080:8080 flotilla:dev coordinator --bind 0.0.0.0 --port 8080
#
# A one-process cluster (a coordinator with its embedded resource manager) then answers at
# http://localhost:8080. deploy/compose.yml and deploy/kubernetes/ run a highly available one.

# --- build ---------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The workspace's release profile; only the binary leaves this stage.
RUN cargo build --release --locked --bin flotilla \
    && cp target/release/flotilla /usr/local/bin/flotilla \
    && rm -rf target

# --- runtime -------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/flotilla --create-home flotilla \
    && mkdir -p /etc/flotilla/catalog \
    && printf 'connector.name=tpch\n' > /etc/flotilla/catalog/tpch.properties
COPY --from=build /usr/local/bin/flotilla /usr/local/bin/flotilla
USER flotilla
WORKDIR /var/lib/flotilla
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s CMD ["flotilla", "health-check", "--url", "http://127.0.0.1:8080"]
ENTRYPOINT ["flotilla"]
CMD ["coordinator", "--etc-dir", "/etc/flotilla", "--bind", "0.0.0.0", "--port", "8080"]
