package events

import (
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// Handler serves a handler's publishing calls through pub, as a sidecar
// does on its mesh socket (host plugins.EventsHost):
//
//	POST /v1/topics/{topic}           publish the body in its own transaction → 204
//	POST /v1/topics/{topic}/announce  announce events the handler appended in its own transaction → 204
//
// (An announce's seq query parameter, which earlier handlers send, is
// ignored.)
func Handler(pub *Publisher, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/topics/{topic}", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, store.MaxValueBytes))
		if err != nil {
			http.Error(w, "event body too large or unreadable", http.StatusRequestEntityTooLarge)
			return
		}
		err = pub.Publish(r.Context(), r.PathValue("topic"), Event{
			ID: r.Header.Get(wire.HeaderEventID), ContentType: r.Header.Get("Content-Type"), Body: body,
		})
		switch {
		case errors.Is(err, ErrInvalid), errors.Is(err, ErrTooLarge):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			logger.Warn("publishing an event failed", "topic", r.PathValue("topic"), "err", err)
			http.Error(w, "publishing failed", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /v1/topics/{topic}/announce", func(w http.ResponseWriter, r *http.Request) {
		if !ValidTopic(r.PathValue("topic")) {
			http.Error(w, "want /v1/topics/{topic}/announce with a valid topic", http.StatusBadRequest)
			return
		}
		pub.Announce(r.PathValue("topic"))
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}
