# Coffer's image: one slim binary for `coffer controller` and `coffer worker`.
#
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/coffer-dev/coffer:0.1.0 .
#
# It cannot be built on the development machines (they have no Docker engine), so it is kept
# short and reviewed by hand. Base images are pinned by tag (Rust 1.95, Debian 12); pin them by
# digest (`@sha256:...`) in the pipeline that publishes the image. The tag must match
# Cargo.toml's version, the chart's appVersion, the default of `coffer controller
# --worker-image` and deploy/coffer.yaml (tests/packaging.rs checks them).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The workspace needs both members' manifests and sources to resolve; only `coffer` is built.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY testenv ./testenv
RUN cargo build --release --locked --bin coffer \
 && strip target/release/coffer

FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim
ARG DEBIAN_RELEASE
ARG REVISION=unknown
# pg_dump must be at least the server's major version, so the image carries newer client tools
# (PostgreSQL 17) than Debian's own (15), from the PostgreSQL project's repository: they back
# up servers up to 17. A PostgreSQL 18 server needs postgresql-client-18 here (the worker
# refuses an older pg_dump with a message naming the version).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
      https://www.postgresql.org/media/keys/ACCC4CF8.asc \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${DEBIAN_RELEASE}-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-17 \
 && apt-get purge -y curl \
 && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/coffer /usr/local/bin/coffer
# Coffer finds pg_dump, pg_dumpall, pg_restore and psql on PATH (then /usr/lib/postgresql/<newest>/bin).
ENV PATH=/usr/lib/postgresql/17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# A numeric non-root user, as the restricted Pod Security Standard wants (runAsNonRoot can
# only check numeric users). Worker Jobs and the Deployment set the same UID.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/coffer"]
CMD ["--help"]
LABEL org.opencontainers.image.title="coffer" \
      org.opencontainers.image.description="Kubernetes operator that backs up Redis, PostgreSQL and volumes to S3-compatible storage and restores them" \
      org.opencontainers.image.source="https://github.com/coffer-dev/coffer" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${REVISION}"
