package events

import (
	"encoding/json"
	"errors"
	"github.com/griddle-mesh/griddle/internal/wire"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/griddle-mesh/griddle/internal/store"
)

// HeaderEventID names an event's id, on publishing calls and on deliveries.
const HeaderEventID = wire.HeaderEventID

// Handler serves a handler's publishing calls through pub, as a sidecar
// does on its mesh socket (host plugins.EventsHost):
//
//	POST /v1/topics/{topic}                 publish the body in its own transaction → {"seq": N}
//	POST /v1/topics/{topic}/announce?seq=N  announce an event the handler appended in its own transaction
func Handler(pub *Publisher, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/topics/{topic}", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, store.MaxValueBytes))
		if err != nil {
			http.Error(w, "event body too large or unreadable", http.StatusRequestEntityTooLarge)
			return
		}
		seq, err := pub.Publish(r.Context(), r.PathValue("topic"), Event{
			ID: r.Header.Get(HeaderEventID), ContentType: r.Header.Get("Content-Type"), Body: body,
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
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Seq uint64 `json:"seq"`
		}{seq})
	})
	mux.HandleFunc("POST /v1/topics/{topic}/announce", func(w http.ResponseWriter, r *http.Request) {
		seq, err := strconv.ParseUint(r.URL.Query().Get("seq"), 10, 64)
		if err != nil || !ValidTopic(r.PathValue("topic")) {
			http.Error(w, "want /v1/topics/{topic}/announce?seq=N", http.StatusBadRequest)
			return
		}
		pub.Announce(r.PathValue("topic"), seq)
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}
