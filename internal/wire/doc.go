// Package wire defines the envelope that carries HTTP exchanges between
// Griddle processes over mangos sockets, and its conversions to and from
// net/http values.
//
// The messages are generated from envelope.proto with protoc 3.21.12 and
// protoc-gen-go v1.36.12:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go generate ./internal/wire
package wire

//go:generate protoc --go_out=. --go_opt=paths=source_relative envelope.proto
