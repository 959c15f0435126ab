package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// Subscription delivers the events of one publisher's topic to a path of
// this service's handler, as HTTP POSTs, in order, at least once.
type Subscription struct {
	Publisher string
	Topic     string
	Path      string
}

// ParseSubscription reads PUBLISHER/TOPIC=/PATH, the --subscribe flag.
func ParseSubscription(s string) (Subscription, error) {
	src, path, ok := strings.Cut(s, "=")
	pub, topic, ok2 := strings.Cut(src, "/")
	sub := Subscription{Publisher: pub, Topic: topic, Path: path}
	if !ok || !ok2 || !events.ValidName(pub) || !events.ValidTopic(topic) || !strings.HasPrefix(path, "/") {
		return sub, fmt.Errorf("%q: want PUBLISHER/TOPIC=/PATH, e.g. messages/message.sent=/feed/events", s)
	}
	return sub, nil
}

// subscribe runs the service's subscriptions until ctx ends. Only one
// instance of a service delivers at a time: the instances elect one through
// etcd, and another takes over if it goes away.
func (s *Sidecar) subscribe(ctx context.Context, backend store.Backend, subs []Subscription) {
	own, err := backend.Space(s.cfg.Service)
	if err != nil {
		s.log.Error("subscriptions disabled: no key space", "err", err)
		return
	}
	byTopic := map[string]string{} // publisher/topic → path
	var refs []events.TopicRef
	for _, sub := range subs {
		log, err := backend.Space(sub.Publisher)
		if err != nil {
			s.log.Error("subscription disabled", "publisher", sub.Publisher, "err", err)
			continue
		}
		refs = append(refs, events.TopicRef{Publisher: sub.Publisher, Topic: sub.Topic, Log: log})
		byTopic[sub.Publisher+"/"+sub.Topic] = sub.Path
	}
	if len(refs) == 0 {
		return
	}
	for ctx.Err() == nil {
		err := s.leadSubscriptions(ctx, own, refs, byTopic)
		if ctx.Err() == nil {
			s.log.Warn("subscriptions stopped; campaigning again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// leadSubscriptions campaigns for the service's subscriber role and, once
// elected, runs the subscriber until ctx ends or the session is lost.
func (s *Sidecar) leadSubscriptions(ctx context.Context, own store.Store, refs []events.TopicRef, byTopic map[string]string) error {
	sess, err := concurrency.NewSession(s.deps.Etcd, concurrency.WithTTL(int(s.cfg.TTL.Seconds())), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("etcd session: %w", err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, s.cfg.Prefix+"subscribers/"+s.cfg.Service)
	if err := el.Campaign(ctx, s.cfg.ID); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	s.log.Info("delivering events to this instance's handler", "subscriptions", len(refs))
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	sub, err := events.NewSubscriber(events.SubscriberConfig{
		Name:       s.cfg.Service,
		Cursors:    own,
		Topics:     refs,
		Announcers: s.announcers(refs),
		Deliver: func(ctx context.Context, ev events.Event) error {
			return s.deliver(ctx, byTopic[ev.Publisher+"/"+ev.Topic], ev)
		},
		Logger: s.log,
		TLS:    s.cfg.ClientTLS,
	})
	if err != nil {
		return err
	}
	err = sub.Run(lctx)
	if ctx.Err() == nil {
		return fmt.Errorf("lost the subscriber role: %w", errors.Join(err, context.Cause(lctx)))
	}
	return nil
}

// announcers lists the PUB addresses of the publishers' instances.
func (s *Sidecar) announcers(refs []events.TopicRef) func() []string {
	return func() []string {
		c := s.deps.Catalog
		if c == nil {
			return nil
		}
		var out []string
		seen := map[string]bool{}
		for _, r := range refs {
			if seen[r.Publisher] {
				continue
			}
			seen[r.Publisher] = true
			for _, in := range c.Instances(r.Publisher) {
				if in.Events != "" {
					out = append(out, in.Events)
				}
			}
		}
		return out
	}
}

// deliver POSTs one event to the handler; any 2xx acknowledges it.
func (s *Sidecar) deliver(ctx context.Context, path string, ev events.Event) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OutboundTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.cfg.Service+path, bytes.NewReader(ev.Body))
	if err != nil {
		return err
	}
	req.ContentLength = int64(len(ev.Body))
	if ev.ContentType != "" {
		req.Header.Set("Content-Type", ev.ContentType)
	}
	req.Header.Set(wire.HeaderEventID, ev.ID)
	req.Header.Set(wire.HeaderEventSeq, strconv.FormatUint(ev.Seq, 10))
	req.Header.Set(wire.HeaderEventTopic, ev.Topic)
	req.Header.Set(wire.HeaderEventPublisher, ev.Publisher)
	resp, err := s.host.Load().RoundTrip(req)
	if err != nil {
		return fmt.Errorf("delivering event %d of %s/%s: %w", ev.Seq, ev.Publisher, ev.Topic, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("delivering event %d of %s/%s: handler answered %d", ev.Seq, ev.Publisher, ev.Topic, resp.StatusCode)
	}
	return nil
}
