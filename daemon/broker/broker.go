// Package broker runs the embedded MQTT broker (mochi-mqtt v2) that
// `broker = "embedded"` asks for: a first run needs nothing else installed.
// It listens on one TCP address and lets every client in; use a real broker
// (Mosquitto) with authentication in production.
package broker

import (
	"fmt"
	"log/slog"
	"net"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Broker is a running embedded broker.
type Broker struct {
	server *mqtt.Server
	addr   string
}

// Start listens on addr (host:port; port 0 picks a free one) and serves.
func Start(addr string, log *slog.Logger) (*Broker, error) {
	// Bind first so that a busy port is an error here, not in a goroutine.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	bound := ln.Addr().String()
	ln.Close()
	s := mqtt.New(&mqtt.Options{InlineClient: false, Logger: log})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: bound})); err != nil {
		return nil, fmt.Errorf("embedded broker on %s: %w", bound, err)
	}
	if err := s.Serve(); err != nil {
		return nil, fmt.Errorf("embedded broker on %s: %w", bound, err)
	}
	return &Broker{server: s, addr: bound}, nil
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() string { return b.addr }

// URL is the address as a broker URL for clients.
func (b *Broker) URL() string { return "tcp://" + b.addr }

// Close disconnects every client and stops listening.
func (b *Broker) Close() error { return b.server.Close() }
