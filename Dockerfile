# Coffer's image: one slim binary for `coffer controller` and `coffer worker`.
#
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/coffer-dev/coffer:0.1.0 .
#
# On machines without a Docker engine or registry access, tools/images/build builds this same
# file with buildah (`--build-arg BINARY=host`, a Debian base from mmdebstrap); the end-to-end
# tests run that image on a real node. Base images are pinned by tag (Rust 1.95, Debian 13);
# pin them by digest (`@sha256:...`) in the pipeline that publishes the image. The tag must match
# Cargo.toml's version, the chart's appVersion, the default of `coffer controller
# --worker-image` and deploy/coffer.yaml (tests/packaging.rs checks them).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie
# The runtime's base. Where docker.io cannot be reached, any Debian trixie root filesystem
# with apt works (tools/images/build makes one with mmdebstrap).
ARG RUNTIME_BASE=docker.io/library/debian:${DEBIAN_RELEASE}-slim
# Where the `coffer` binary comes from: `build` compiles it in the Rust image below; `host`
# takes target/release/coffer from the build context (or HOST_BINARY: the test suite's
# target/image/coffer), built beforehand with `cargo build --release --locked --bin coffer`
# on a glibc no newer than trixie's (2.41).
ARG BINARY=build

FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The workspace needs both members' manifests and sources to resolve; only `coffer` is built.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY testenv ./testenv
RUN cargo build --release --locked --bin coffer \
 && install -D target/release/coffer /out/coffer

FROM scratch AS host
ARG HOST_BINARY=target/release/coffer
COPY ${HOST_BINARY} /out/coffer

FROM ${BINARY} AS binary

FROM ${RUNTIME_BASE}
ARG REVISION=unknown
# pg_dump must be at least the server's major version: Debian trixie's PostgreSQL 17 client
# tools back up servers up to 17. A PostgreSQL 18 server needs postgresql-client-18 here (the
# worker refuses an older pg_dump with a message naming both versions).
# MariaDB's client tools (trixie: 11.8) back up MariaDB servers up to 11.8, and MySQL servers
# too: Oracle's mysqldump is not in Debian, and mariadb-dump reads MySQL 8 over the same
# protocol (a MySQL-only feature such as caching_sha2_password over an unencrypted
# connection can need an account with mysql_native_password).
# Restore drills start scratch servers inside the worker Pod: redis-server, PostgreSQL 17
# (initdb, postgres, pg_ctl; a backup of an older server is drilled in it, as pg_restore
# allows) and MariaDB's server core (mariadbd, mariadb-install-db), with nss_wrapper (a
# passwd entry for initdb when a drill runs as a UID the image does not list). What they
# never use is removed in the same layer: PostgreSQL's LLVM JIT and the LLVM and Z3
# libraries only it needs, the downloaded packages, the cluster and configuration Debian's
# scripts create (drills make their own on the Pod's emptyDir), documentation and
# translations.
RUN apt-get update \
 && echo "create_main_cluster = false" > /tmp/createcluster.conf \
 && mkdir -p /etc/postgresql-common \
 && mv /tmp/createcluster.conf /etc/postgresql-common/createcluster.conf \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client-17 mariadb-client \
      redis-server postgresql-17 mariadb-server-core libnss-wrapper \
 && rm -rf /usr/lib/postgresql/17/lib/llvmjit* /usr/lib/postgresql/17/lib/bitcode \
      /usr/lib/*-linux-gnu/libLLVM* /usr/lib/*-linux-gnu/libz3.so* \
      /var/lib/postgresql/* /var/lib/redis/* /usr/share/doc/* /usr/share/man/* /usr/share/locale/* \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && echo "coffer:x:65532:65532:coffer:/nonexistent:/usr/sbin/nologin" >> /etc/passwd \
 && echo "coffer:x:65532:" >> /etc/group
COPY --from=binary /out/coffer /usr/local/bin/coffer
# Coffer finds pg_dump, pg_dumpall, pg_restore and psql on PATH (then /usr/lib/postgresql/<newest>/bin).
ENV PATH=/usr/lib/postgresql/17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# A numeric non-root user, as the restricted Pod Security Standard wants (runAsNonRoot can
# only check numeric users). Worker Jobs and the Deployment set the same UID. It has a
# passwd entry (above); a drill run as another UID (jobTemplate.runAsUser) gives initdb,
# which refuses to run as a user without one, an entry of its own with nss_wrapper.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/coffer"]
CMD ["--help"]
LABEL org.opencontainers.image.title="coffer" \
      org.opencontainers.image.description="Kubernetes operator that backs up Redis, PostgreSQL, MySQL/MariaDB and volumes to S3-compatible storage and restores them" \
      org.opencontainers.image.source="https://github.com/coffer-dev/coffer" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${REVISION}"
