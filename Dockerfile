# The berth image: one binary, `berth`, whose subcommands are the sidecar (`proxy`), the
# injector (`injector`) and the admin API (`admin`). Not built in berth's own CI (no container
# engine there); see docs/kubernetes.md.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin berth

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/berth /usr/local/bin/berth
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/berth"]
