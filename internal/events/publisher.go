package events

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol/pub"
	// The transports announcements travel over (mangos registers them on import).
	_ "go.nanomsg.org/mangos/v3/transport/ipc"
	_ "go.nanomsg.org/mangos/v3/transport/tcp"
	_ "go.nanomsg.org/mangos/v3/transport/tlstcp"

	"github.com/griddle-mesh/griddle/internal/store"
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Name is the publishing service; its events are Event.Publisher = Name.
	Name string
	// Log is the key space that holds Name's log. To publish atomically with
	// state (AppendTx in the handler's transaction) it must be the service's
	// own key space, the one its handlers' transactions run in.
	Log store.Store
	// Listen is the mangos URL the PUB socket announces on, e.g.
	// "tcp://127.0.0.1:0" (port 0: a free port, see Publisher.Addr). Empty:
	// no socket, subscribers find new events by polling only.
	Listen string
	// TLS is the server side of mutual TLS for a tls+tcp:// Listen.
	TLS *tls.Config
	// Logger receives announcement failures. Nil: slog.Default().
	Logger *slog.Logger
}

// Validate reports whether c can be used; the error wraps ErrInvalid and
// names the field. It does no I/O.
func (c PublisherConfig) Validate() error {
	if !ValidName(c.Name) {
		return fmt.Errorf("%w: publisher name %q: want 1-63 of a-z 0-9 - . not starting with - or .", ErrInvalid, c.Name)
	}
	if c.Log == nil {
		return fmt.Errorf("%w: publisher log store is required", ErrInvalid)
	}
	return nil
}

// Publisher appends events to one service's log and announces them on a
// mangos PUB socket. Announcements are hints only (the PUB socket drops them
// for slow peers, and nothing is resent): subscribers always read the log.
// Safe for concurrent use. Close releases the socket.
type Publisher struct {
	name   string
	log    store.Store
	logger *slog.Logger

	peers   atomic.Int32  // subscriber connections attached now
	retries atomic.Uint64 // see Retries

	mu     sync.Mutex // guards sock and closed; held while sending
	sock   mangos.Socket
	addr   string
	closed bool
}

// NewPublisher validates cfg and, when cfg.Listen is set, opens the PUB
// socket and listens on it before returning.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Publisher{name: cfg.Name, log: cfg.Log, logger: cfg.Logger}
	if p.logger == nil {
		p.logger = slog.Default()
	}
	if cfg.Listen == "" {
		return p, nil
	}
	sock, err := pub.NewSocket()
	if err != nil {
		return nil, fmt.Errorf("events: publisher %s: new pub socket: %w", cfg.Name, err)
	}
	sock.SetPipeEventHook(func(ev mangos.PipeEvent, _ mangos.Pipe) {
		switch ev {
		case mangos.PipeEventAttached:
			p.peers.Add(1)
		case mangos.PipeEventDetached:
			p.peers.Add(-1)
		}
	})
	l, err := sock.NewListener(cfg.Listen, tlsOption(cfg.TLS))
	if err == nil {
		err = l.Listen()
	}
	if err != nil {
		_ = sock.Close()
		return nil, fmt.Errorf("events: publisher %s: listen %s: %w", cfg.Name, cfg.Listen, err)
	}
	p.sock, p.addr = sock, l.Address()
	return p, nil
}

// Addr returns the URL subscribers dial for announcements (with the port
// actually bound), or "" when the Publisher has no socket.
func (p *Publisher) Addr() string { return p.addr }

// Peers returns the number of subscriber connections attached to the PUB
// socket now. An announcement reaches only the subscribers attached when it
// is sent; the others find the event at their next poll.
func (p *Publisher) Peers() int { return int(p.peers.Load()) }

// Name returns the publishing service's name.
func (p *Publisher) Name() string { return p.name }

// Publish appends ev to topic in its own transaction on the log store and,
// once committed, announces it. Errors from the store are returned
// wrapped; nothing is published then.
func (p *Publisher) Publish(ctx context.Context, topic string, ev Event) error {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return ErrClosed
	}
	runs := 0
	err := p.log.Transact(ctx, func(tx store.Tx) error {
		if runs++; runs > 1 {
			p.retries.Add(1)
		}
		return AppendTx(tx, p.name, topic, ev)
	})
	if err != nil {
		return fmt.Errorf("events: publish %s/%s: %w", p.name, topic, err)
	}
	p.Announce(topic)
	return nil
}

// Retries counts the times a Publish transaction ran again after a
// conflict, since the Publisher was made. A Publish transaction does
// nothing but append, and appends read nothing, so it stays 0 however many
// publish at once; anything else is a regression of the log.
func (p *Publisher) Retries() uint64 { return p.retries.Load() }

// Announce tells subscribers that topic's log has grown. Call it after the
// transaction holding AppendTx has committed. It never blocks on slow
// subscribers and does nothing without a socket or after Close; a lost
// announcement only delays delivery until the subscriber's next poll.
func (p *Publisher) Announce(topic string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sock == nil || p.closed {
		return
	}
	// The hint's seq is 0: the new event's is known only to readers of
	// the log.
	if err := p.sock.Send(hint(p.name, topic, 0)); err != nil {
		p.logger.Warn("events: announce failed", "publisher", p.name, "topic", topic, "err", err)
	}
}

// Close closes the socket; later Publish calls fail with ErrClosed. It is
// safe to call more than once.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.sock != nil {
		if err := p.sock.Close(); err != nil {
			return fmt.Errorf("events: publisher %s: close: %w", p.name, err)
		}
	}
	return nil
}

// hint is an announcement: "<publisher>\x00<topic>\x00<seq>". Subscribers
// subscribe to the prefix hintPrefix(publisher, topic).
func hint(publisher, topic string, seq uint64) []byte {
	return strconv.AppendUint(hintPrefix(publisher, topic), seq, 10)
}

func hintPrefix(publisher, topic string) []byte {
	return []byte(publisher + "\x00" + topic + "\x00")
}

// parseHint splits an announcement into its topic prefix and seq.
func parseHint(b []byte) (prefix string, seq uint64, ok bool) {
	i := bytes.LastIndexByte(b, 0)
	if i < 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(string(b[i+1:]), 10, 64)
	if err != nil {
		return "", 0, false
	}
	return string(b[:i+1]), seq, true
}

// AnnounceCommitted returns a function that announces, through p, the
// topics of p's log among the prefixes of stamped keys a commit wrote (see
// storehttp.WithCommitted): a sidecar passes it to the store server it
// serves its handler, so that events the handler appends in its own
// transactions are announced as soon as they commit.
func (p *Publisher) AnnounceCommitted() func(prefixes [][]byte) {
	own := KeyPrefix + "l/" + p.name + "/"
	return func(prefixes [][]byte) {
		for _, b := range prefixes {
			s := string(b)
			if topic, ok := strings.CutPrefix(s, own); ok {
				if topic, ok = strings.CutSuffix(topic, "/"); ok && ValidTopic(topic) {
					p.Announce(topic)
				}
			}
		}
	}
}

// tlsOption is the mangos option map that sets c, nil without one.
func tlsOption(c *tls.Config) map[string]any {
	if c == nil {
		return nil
	}
	return map[string]any{mangos.OptionTLSConfig: c}
}
