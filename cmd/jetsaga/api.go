package main

import (
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/orchestrator"
	sagaapi "github.com/jetsaga/jetsaga/service"
)

// startAPI serves the saga API (package service) on nc until the returned
// function is called.
func startAPI(nc *nats.Conn, js jetstream.JetStream, ns events.Namespace, tp trace.TracerProvider, log *slog.Logger) (stop func(), err error) {
	var opts []orchestrator.ClientOption
	if tp != nil {
		opts = append(opts, orchestrator.WithTracerProvider(tp))
	}
	client := orchestrator.NewClient(js, ns, opts...)
	svc, err := sagaapi.Start(sagaapi.Config{Conn: nc, Client: client, Version: apiVersion(), Logger: log})
	if err != nil {
		client.Close()
		return nil, err
	}
	info := svc.Info()
	log.Info("serving the saga API", "service", info.Name, "id", info.ID, "subjects", sagaapi.Subject(ns, "*"))
	return func() {
		if err := svc.Stop(); err != nil {
			log.Warn("saga API", "err", err)
		}
		client.Close()
	}, nil
}

// apiVersion is the binary's version as the semantic version micro wants.
func apiVersion() string {
	v, _ := buildVersion()
	v = strings.TrimPrefix(v, "v")
	if v == "" || v[0] < '0' || v[0] > '9' {
		return "0.0.0-devel"
	}
	return v
}
