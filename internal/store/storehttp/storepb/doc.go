// Package storepb holds the wire messages of the store's HTTP protocol
// (package storehttp), generated from store.proto. Regenerate with
// go generate after editing store.proto (needs protoc and protoc-gen-go).
package storepb

//go:generate protoc --go_out=. --go_opt=paths=source_relative store.proto
