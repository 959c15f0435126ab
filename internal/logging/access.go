package logging

import (
	"context"
	"log/slog"
	"net/http"
	"time"
)

// Access is one line of an edge's access log: what a request asked, where
// it went and how it was answered. IDs are the request id (or, for a
// Griddle error, the error id) the client saw.
type Access struct {
	Service, Version    string
	Experiment, Variant string
	Status              int
	Duration            time.Duration
	Retries             int
	RequestID, ErrorID  string
}

// LogAccess writes a to l at info, under the message "access", with the
// request's method, path, remote address and user agent. l nil: nothing.
func LogAccess(ctx context.Context, l *slog.Logger, r *http.Request, a Access) {
	if l == nil {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("remote", r.RemoteAddr),
		slog.String("service", a.Service), slog.String("version", a.Version),
		slog.Int("status", a.Status), slog.Duration("duration", a.Duration),
	}
	if a.Experiment != "" {
		attrs = append(attrs, slog.String("experiment", a.Experiment), slog.String("variant", a.Variant))
	}
	if a.Retries > 0 {
		attrs = append(attrs, slog.Int("retries", a.Retries))
	}
	if a.RequestID != "" {
		attrs = append(attrs, slog.String("request_id", a.RequestID))
	}
	if a.ErrorID != "" {
		attrs = append(attrs, slog.String("error_id", a.ErrorID))
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, slog.String("user_agent", ua))
	}
	l.LogAttrs(ctx, slog.LevelInfo, "access", attrs...)
}
