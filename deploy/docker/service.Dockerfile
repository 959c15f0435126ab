# A service image: the team's handler binary beside `griddle sidecar`, which
# starts it as a plugin (go-plugin) and dies with it, so the two share one
# container. A team copies this file and changes the build stage only.
#
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=profiles \
#     --build-arg GRIDDLE_IMAGE=griddle:dev-fdb -t griddle-profiles:dev .
#
# Run it with the sidecar's flags; --plugin is already set:
#
#   docker run griddle-profiles:dev --service profiles --version v1 --etcd etcd:2379 ...

ARG GO_VERSION=1.26
ARG GRIDDLE_IMAGE=griddle:dev

FROM golang:${GO_VERSION}-bookworm AS handler
ARG SERVICE
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# A handler imports only plugins and the standard library: static, no cgo.
RUN test -n "${SERVICE}" && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o /out/handler ./services/${SERVICE}

FROM ${GRIDDLE_IMAGE}
COPY --from=handler /out/handler /usr/local/bin/handler
USER nonroot:nonroot
EXPOSE 7001 9101
ENTRYPOINT ["/usr/local/bin/griddle", "sidecar", "--plugin", "/usr/local/bin/handler"]
