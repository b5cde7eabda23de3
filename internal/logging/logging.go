// Package logging makes edgeinferd's log/slog logger: text or JSON on a
// writer, with a level for the whole daemon and, optionally, one per
// component. A logger's component is the value of its "component"
// attribute (mqtt, serving, repo, broker, http), "sensor" or "pipeline"
// for the loggers of sensors and pipelines, and "daemon" for the rest.
package logging

import (
	"context"
	"io"
	"log/slog"
)

// Components are the names a per-component level may be given for.
var Components = []string{"broker", "daemon", "http", "mqtt", "pipeline", "repo", "sensor", "serving"}

// New returns a logger writing format ("text" or "json") to w at level,
// except for the components levels names.
func New(w io.Writer, format string, level slog.Level, levels map[string]slog.Level) *slog.Logger {
	lowest := level
	for _, l := range levels {
		lowest = min(lowest, l)
	}
	opts := &slog.HandlerOptions{Level: lowest}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	if len(levels) == 0 {
		return slog.New(h)
	}
	return slog.New(&handler{next: h, level: level, levels: levels, component: "daemon"})
}

// handler filters records by the level of its logger's component.
type handler struct {
	next      slog.Handler
	level     slog.Level            // for components levels does not name
	levels    map[string]slog.Level // per component
	component string
}

func (h *handler) threshold() slog.Level {
	if l, ok := h.levels[h.component]; ok {
		return l
	}
	return h.level
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.threshold() && h.next.Enabled(ctx, l)
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error { return h.next.Handle(ctx, r) }

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(attrs)
	for _, a := range attrs {
		switch a.Key {
		case "component":
			c.component = a.Value.String()
		case "sensor", "pipeline":
			if c.component == "daemon" {
				c.component = a.Key
			}
		}
	}
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}
