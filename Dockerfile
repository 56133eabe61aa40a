# Front Door runtime image: build in a full Rust image, run in a slim one.
# docker build -t frontdoor . ; see docker-compose.yml for the whole stack.

FROM rust:1-bookworm AS build
WORKDIR /src
# Manifests first, so dependency layers are reused when only sources change.
COPY Cargo.toml Cargo.lock ./
COPY actors/Cargo.toml actors/Cargo.toml
COPY actors actors
# A workspace member (the simulator, a client of the API): its manifest must be
# present for cargo to read the workspace; only the runtime binary is built.
COPY simulate simulate
COPY benches benches
COPY src src
COPY migrations migrations
COPY config config
RUN cargo build --release --locked --bin frontdoor

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /app frontdoor
WORKDIR /app
COPY --from=build /src/target/release/frontdoor /app/frontdoor
COPY config /app/config
RUN mkdir -p /app/data && chown frontdoor /app/data
USER frontdoor
ENV FRONTDOOR_ENVIRONMENT=production
EXPOSE 8080
# /readyz needs a monitor token in production: the healthcheck lives in the
# orchestrator's configuration (see docker-compose.yml), not in the image.
ENTRYPOINT ["/app/frontdoor"]
