# The berth image for users with Docker: the same files as scripts/image.sh (which berth's own
# test command builds with buildah, no daemon), assembled by the same script. One binary,
# `berth`, whose subcommands are the sidecar (`proxy`), the injector (`injector`) and the
# admin API (`admin`); from scratch, running as the non-root user 65532.
#
#   docker build -t ghcr.io/berth-io/berth:"$(cargo pkgid -p berth | cut -d@ -f2)" \
#     --build-arg VERSION="$(cargo pkgid -p berth | cut -d@ -f2)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" .
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin berth \
 && scripts/image.sh --rootfs /rootfs --binary target/release/berth

FROM scratch
COPY --from=build /rootfs/ /
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="berth" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/berth-io/berth" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/usr/local/bin
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/berth"]
