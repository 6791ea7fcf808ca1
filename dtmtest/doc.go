// Package dtmtest checks jetsaga's DTM-compatible gateway with DTM's own Go
// client, github.com/dtm-labs/client v1.17.3, against participants that use
// dtmcli's sub-transaction barrier on PostgreSQL — conformance with a real
// DTM client rather than with our reading of it.
//
// It is a module of its own so that the client's dependencies (grpc, the
// mongo and redis drivers) stay out of jetsaga's go.mod; CI runs it with
// `cd dtmtest && go test ./...`. The version is pinned: the module proxy
// refuses @latest for the client, and v1.18.7 is retracted.
package dtmtest
