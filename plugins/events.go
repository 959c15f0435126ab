package plugins

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/griddle-mesh/griddle/internal/events/eventlog"
	"github.com/griddle-mesh/griddle/plugins/store"
)

// EventsHost is the host name under which a sidecar takes a handler's
// events on its mesh socket.
const EventsHost = "griddle-events"

// Publish publishes an event on topic in a transaction of its own.
// Subscribers receive it at least once, in commit order per topic.
func (m *MeshAPI) Publish(ctx context.Context, topic, contentType string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+EventsHost+"/v1/topics/"+url.PathEscape(topic), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("plugins: publish: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return fmt.Errorf("plugins: publish: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("plugins: publish to %s: %d %s", topic, resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

// PublishTx appends an event on topic inside tx, a transaction of this
// service's store: the event is published if and only if tx commits, and
// together with the state tx writes. The event's place in the log is set
// at commit, so publishers never conflict with each other on the log; tx
// must not read the log itself. Like everything in a transaction it may
// run more than once. Call Announce after the commit to wake subscribers
// at once; without it they find the event within their poll interval (a
// second).
func (m *MeshAPI) PublishTx(tx store.Tx, topic, contentType string, body []byte) error {
	if m.service == "" {
		return fmt.Errorf("plugins: publish: %w", ErrNoMesh)
	}
	return eventlog.AppendTx(tx, m.service, topic, eventlog.Event{ContentType: contentType, Body: body})
}

// Announce tells subscribers that events on topic were committed.
func (m *MeshAPI) Announce(ctx context.Context, topic string) error {
	u := "http://" + EventsHost + "/v1/topics/" + url.PathEscape(topic) + "/announce"
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
