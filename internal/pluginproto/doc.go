// Package pluginproto is the contract between a Griddle handler process (the
// plugins SDK) and the sidecar that runs it (internal/pluginhost): the
// go-plugin handshake, the environment variables the sidecar sets, and the
// small gRPC lifecycle service (Describe) through which the sidecar learns
// the handler's HTTP socket.
//
// The messages and service stubs are generated from handler.proto with
// protoc 3.21.12, protoc-gen-go v1.36.12 and protoc-gen-go-grpc v1.5.1:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
//	go generate ./internal/pluginproto
package pluginproto

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative handler.proto
