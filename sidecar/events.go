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

	"github.com/prometheus/client_golang/prometheus"
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
	return s.elected(ctx, "subscribers", func(ctx context.Context) error {
		s.log.Info("delivering events to this instance's handler", "subscriptions", len(refs))
		sub, err := events.NewSubscriber(events.SubscriberConfig{
			Name:       s.cfg.Service,
			Cursors:    own,
			Topics:     refs,
			Announcers: s.announcers(refs),
			Deliver: func(ctx context.Context, ev events.Event) error {
				return s.deliver(ctx, byTopic[ev.Publisher+"/"+ev.Topic], ev)
			},
			OnSkip: func(ref events.TopicRef, _, _ events.Pos) {
				s.eventMetrics.skipped.WithLabelValues(ref.Publisher, ref.Topic).Inc()
			},
			Logger: s.log,
			TLS:    s.cfg.ClientTLS,
		})
		if err != nil {
			return err
		}
		return sub.Run(ctx)
	})
}

// elected campaigns, among the instances of this service, for role
// ("subscribers", "trimmer") and, once elected, runs fn until ctx ends or
// the etcd session is lost. It returns nil once ctx has ended.
func (s *Sidecar) elected(ctx context.Context, role string, fn func(ctx context.Context) error) error {
	sess, err := concurrency.NewSession(s.deps.Etcd, concurrency.WithTTL(int(s.cfg.TTL.Seconds())), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("etcd session: %w", err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, s.cfg.Prefix+role+"/"+s.cfg.Service)
	if err := el.Campaign(ctx, s.cfg.ID); err != nil {
		return fmt.Errorf("campaign for %s: %w", role, err)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	err = fn(lctx)
	if ctx.Err() == nil {
		return fmt.Errorf("lost the %s role: %w", role, errors.Join(err, context.Cause(lctx)))
	}
	return nil
}

// DefaultRetainInterval is how often the elected instance trims its
// service's event log when Config.RetainInterval is 0.
const DefaultRetainInterval = time.Second

// retain trims the service's event log to Config.Retention until ctx ends.
// The log lives in the publisher's key space and only the publisher knows
// its bounds, so the publisher's sidecars trim it: one at a time, elected
// through etcd (a Trimmer must be the only one removing from its logs).
// Subscribers register on the logs they follow, so a soft bound waits for
// the slowest one's stored cursor.
func (s *Sidecar) retain(ctx context.Context, backend store.Backend) {
	own, err := backend.Space(s.cfg.Service)
	if err != nil {
		s.log.Error("retention disabled: no key space", "err", err)
		return
	}
	tr, err := events.NewTrimmer(events.TrimmerConfig{
		Publisher: s.cfg.Service,
		Log:       own,
		Topics:    s.cfg.Retention,
		Cursors:   events.RegisteredCursors(own, s.cfg.Service, backend.Space),
		Interval:  s.cfg.RetainInterval,
		Logger:    s.log,
		OnTrim: func(topic string, removed, left int) {
			s.eventMetrics.trimmed.WithLabelValues(topic).Add(float64(removed))
			s.eventMetrics.logEvents.WithLabelValues(topic).Set(float64(left))
		},
	})
	if err != nil {
		s.log.Error("retention disabled", "err", err)
		return
	}
	for ctx.Err() == nil {
		err := s.elected(ctx, "trimmer", func(ctx context.Context) error {
			s.log.Info("trimming this service's event log", "topics", len(s.cfg.Retention))
			return tr.Run(ctx)
		})
		if ctx.Err() == nil {
			s.log.Warn("trimming stopped; campaigning again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// eventMetrics are the sidecar's figures of the event log and delivery.
type eventMetrics struct {
	skipped   *prometheus.CounterVec // by publisher, topic
	trimmed   *prometheus.CounterVec // by topic
	logEvents *prometheus.GaugeVec   // by topic
}

func newEventMetrics(reg prometheus.Registerer) *eventMetrics {
	m := &eventMetrics{
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "griddle_events_skipped_total",
			Help: "Times events this service had not received were trimmed away by a hard retention limit of their publisher, and its subscriber went on after them.",
		}, []string{"publisher", "topic"}),
		trimmed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "griddle_events_trimmed_total",
			Help: "Events this service's retention trimmed from its event log (on the instance elected to trim).",
		}, []string{"topic"}),
		logEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "griddle_events_log_events",
			Help: "Events in this service's log of a topic with a retention, as of the last trim (on the instance elected to trim).",
		}, []string{"topic"}),
	}
	reg.MustRegister(m.skipped, m.trimmed, m.logEvents)
	return m
}

// ParseRetention reads TOPIC=BOUND[,BOUND...], the --retain flag: BOUND is
// events:N (keep the newest N), age:DURATION (keep what is younger) or
// hard (trim even what a subscriber has not received yet).
func ParseRetention(s string) (topic string, r events.Retention, err error) {
	topic, bounds, ok := strings.Cut(s, "=")
	bad := func(why string) (string, events.Retention, error) {
		return topic, r, fmt.Errorf("%q: %s; want TOPIC=events:N,age:DURATION[,hard], e.g. message.sent=events:10000,age:24h", s, why)
	}
	if !ok || !events.ValidTopic(topic) {
		return bad("no valid topic")
	}
	for b := range strings.SplitSeq(bounds, ",") {
		name, v, _ := strings.Cut(b, ":")
		switch name {
		case "events":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return bad("events: want a positive count")
			}
			r.MaxEvents = n
		case "age":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return bad("age: want a positive duration")
			}
			r.MaxAge = d
		case "hard":
			r.Hard = true
		default:
			return bad(fmt.Sprintf("unknown bound %q", b))
		}
	}
	if r.MaxEvents == 0 && r.MaxAge == 0 {
		return bad("no bound")
	}
	return topic, r, nil
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
	if ev.SkippedTo != 0 {
		req.Header.Set(wire.HeaderEventSkipped, strconv.FormatUint(ev.SkippedTo, 10))
	}
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
