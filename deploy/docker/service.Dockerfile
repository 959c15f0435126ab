# A service image: the team's handler binary beside `griddle sidecar`, which
# starts it as a plugin (go-plugin) and dies with it, so the two share one
# container. A team copies this file and changes the handler stage only.
#
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=profiles -t griddle-profiles .
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=profiles --build-arg GRIDDLE_BUILD=fdb -t griddle-profiles:fdb .
#
# GRIDDLE_BUILD=static (default) has no cgo and runs on distroless/static;
# fdb links libfdb_c 7.3 for --store fdb: and runs on distroless/cc. Run it
# with the sidecar's flags; --plugin is already set:
#
#   docker run griddle-profiles --service profiles --version v1 --etcd etcd:2379 ...

ARG GO_VERSION=1.26
ARG FDB_VERSION=7.3.63
ARG GRIDDLE_BUILD=static

FROM golang:${GO_VERSION}-bookworm AS src
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .

# The team's handler: it imports only plugins and the standard library, so
# it is static whatever griddle is.
FROM src AS handler
ARG SERVICE
RUN test -n "${SERVICE}" && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o /out/handler ./services/${SERVICE}

FROM src AS griddle-static
RUN CGO_ENABLED=0 go build -trimpath -ldflags=-s -o /out/griddle ./cmd/griddle

FROM src AS griddle-fdb
# The FoundationDB client (libfdb_c and its headers) from its release
# package; FoundationDB's own image has the library but not the headers.
ARG FDB_VERSION
ARG TARGETARCH
RUN arch=amd64; if [ "$TARGETARCH" = arm64 ]; then arch=aarch64; fi; \
    curl -fsSLo /tmp/fdb-clients.deb "https://github.com/apple/foundationdb/releases/download/${FDB_VERSION}/foundationdb-clients_${FDB_VERSION}-1_${arch}.deb" && \
    dpkg -x /tmp/fdb-clients.deb / && rm /tmp/fdb-clients.deb && test -f /usr/include/foundationdb/fdb_c.h
RUN CGO_ENABLED=1 go build -trimpath -ldflags=-s -tags foundationdb -o /out/griddle ./cmd/griddle

FROM gcr.io/distroless/static-debian12:nonroot AS runtime-static
COPY --from=griddle-static /out/griddle /usr/local/bin/griddle

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime-fdb
COPY --from=griddle-fdb /usr/lib/libfdb_c.so /usr/lib/libfdb_c.so
COPY --from=griddle-fdb /out/griddle /usr/local/bin/griddle

FROM runtime-${GRIDDLE_BUILD}
COPY --from=handler /out/handler /usr/local/bin/handler
USER nonroot:nonroot
EXPOSE 7001 7002 9101
ENTRYPOINT ["/usr/local/bin/griddle", "sidecar", "--plugin", "/usr/local/bin/handler"]
