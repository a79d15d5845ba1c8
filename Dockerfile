# A small image with a static throtl binary, for `throtl k8s job --image …`.
#   docker build -t throtl .
# Alpine's Rust targets musl, so the binary is static (bundled SQLite, rustls:
# no libc or OpenSSL needed at run time) and the final image holds nothing else.
# (Not built in this repository's CI: the CI machine has no Docker engine.)
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev g++ make
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/throtl

FROM scratch
COPY --from=build /src/target/release/throtl /usr/local/bin/throtl
ENV PATH=/usr/local/bin
USER 65534:65534
ENTRYPOINT ["throtl"]
