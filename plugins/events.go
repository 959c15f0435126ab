package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/griddle-mesh/griddle/internal/events/eventlog"
	"github.com/griddle-mesh/griddle/plugins/store"
)

// EventsHost is the host name under which a sidecar takes a handler's
// events on its mesh socket.
const EventsHost = "griddle-events"

// Publish publishes an event on topic in a transaction of its own and
// returns its sequence number in this service's log of the topic.
// Subscribers receive it at least once, in order of sequence per topic.
func (m *MeshAPI) Publish(ctx context.Context, topic, contentType string, body []byte) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+EventsHost+"/v1/topics/"+url.PathEscape(topic), bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("plugins: publish: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("plugins: publish: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("plugins: publish to %s: %d %s", topic, resp.StatusCode, bytes.TrimSpace(msg))
	}
	var out struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, fmt.Errorf("plugins: publish: %w", err)
	}
	return out.Seq, nil
}

// PublishTx appends an event on topic inside tx, a transaction of this
// service's store: the event is published if and only if tx commits, and
// together with the state tx writes. Like everything in a transaction it
// may run more than once; the sequence number it returns is final only once
// the transaction has committed. Call Announce after the commit to wake
// subscribers at once; without it they find the event within their poll
// interval (a second).
func (m *MeshAPI) PublishTx(tx store.Tx, topic, contentType string, body []byte) (uint64, error) {
	if m.service == "" {
		return 0, fmt.Errorf("plugins: publish: %w", ErrNoMesh)
	}
	return eventlog.AppendTx(tx, m.service, topic, eventlog.Event{ContentType: contentType, Body: body})
}

// Announce tells subscribers that events up to seq on topic are committed.
func (m *MeshAPI) Announce(ctx context.Context, topic string, seq uint64) error {
	u := "http://" + EventsHost + "/v1/topics/" + url.PathEscape(topic) + "/announce?seq=" + strconv.FormatUint(seq, 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return fmt.Errorf("plugins: announce: %w", err)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return fmt.Errorf("plugins: announce: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("plugins: announce %s: status %d", topic, resp.StatusCode)
	}
	return nil
}
