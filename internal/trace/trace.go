// Package trace makes the OpenTelemetry spans of a request's hops: the
// edge (or a handler's outbound call), each dispatch attempt, the sidecar
// and its hop to the handler, exported over OTLP/HTTP when an endpoint is
// configured. The W3C trace context travels in the envelope (wire.Trace):
// each hop sends on its own span as the parent of the next, so a trace
// that a client started continues through the mesh and back out of it.
//
// Without an endpoint New returns a nil *Tracer, and every function here
// does nothing on it: the request path pays a nil check.
package trace

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	oteltrace "go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/griddle-mesh/griddle/internal/wire"
)

// instrumentation is the name spans are made under.
const instrumentation = "github.com/griddle-mesh/griddle"

// Config says where spans go.
type Config struct {
	// Endpoint is the OTLP/HTTP collector's URL, such as
	// http://127.0.0.1:4318 (spans are posted to /v1/traces); "": no
	// tracing.
	Endpoint string
	// Ratio is the share of new traces recorded (0: all); a request that
	// comes with a trace context follows its parent's decision.
	Ratio float64
	// Service and Version name the process in its spans' resource
	// (service.name, service.version).
	Service, Version string
	// BatchTimeout is the longest a span waits to be exported (0: 1s).
	BatchTimeout time.Duration
}

// Validate reports the first invalid field, named as on the command line.
func (c Config) Validate() error {
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("trace: --otlp-endpoint: %q: want a URL such as http://127.0.0.1:4318", c.Endpoint)
		}
	}
	if c.Ratio < 0 || c.Ratio > 1 {
		return fmt.Errorf("trace: --trace-ratio: %v is not between 0 and 1", c.Ratio)
	}
	if c.BatchTimeout < 0 {
		return errors.New("trace: BatchTimeout: negative")
	}
	return nil
}

// Tracer makes and exports spans. A nil *Tracer traces nothing.
type Tracer struct {
	tp *sdktrace.TracerProvider
	tr oteltrace.Tracer
}

// New validates cfg and returns a Tracer exporting to cfg.Endpoint, or
// nil when no endpoint is set. Shutdown flushes and stops it. Nothing is
// dialled until the first export.
func New(cfg Config) (*Tracer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Endpoint == "" {
		return nil, nil
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(strings.TrimSuffix(cfg.Endpoint, "/")+"/v1/traces"))
	if err != nil {
		return nil, fmt.Errorf("trace: --otlp-endpoint: %w", err)
	}
	if cfg.BatchTimeout == 0 {
		cfg.BatchTimeout = time.Second
	}
	sampler := sdktrace.AlwaysSample()
	if cfg.Ratio > 0 && cfg.Ratio < 1 {
		sampler = sdktrace.TraceIDRatioBased(cfg.Ratio)
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(cfg.Service)}
	if cfg.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(cfg.Version))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(cfg.BatchTimeout)),
		sdktrace.WithSampler(sdktrace.ParentBased(sampler)),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
	)
	return &Tracer{tp: tp, tr: tp.Tracer(instrumentation)}, nil
}

// Shutdown exports what is pending and stops the tracer.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// Span is one span in progress; the zero Span records nothing.
type Span struct {
	s oteltrace.Span
}

// End ends the span with the HTTP status it stood for (0: none known),
// marking 5xx as errors.
func (s Span) End(status int) {
	if s.s == nil {
		return
	}
	if status != 0 {
		s.s.SetAttributes(semconv.HTTPResponseStatusCode(status))
	}
	if status >= 500 {
		s.s.SetStatus(codes.Error, fmt.Sprintf("status %d", status))
	}
	s.s.End()
}

var propagator = propagation.TraceContext{}

// parent returns ctx with the remote span context tr (nil: none).
func parent(ctx context.Context, tr *wire.Trace) context.Context {
	if tr.GetTraceparent() == "" {
		return ctx
	}
	c := propagation.MapCarrier{"traceparent": tr.GetTraceparent()}
	if ts := tr.GetTracestate(); ts != "" {
		c["tracestate"] = ts
	}
	return propagator.Extract(ctx, c)
}

// contextOf is the W3C context of span sp, to send downstream.
func contextOf(ctx context.Context) *wire.Trace {
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	if c["traceparent"] == "" {
		return nil
	}
	return &wire.Trace{Traceparent: c["traceparent"], Tracestate: c["tracestate"]}
}

// Request starts the span of a request a gateway forwards to req.Service,
// "edge <service>" or, from a handler, "outbound <service>", as a child of
// the trace context the request came with (req.Trace), and makes req.Trace
// the new span's. The returned ctx carries the span for dispatch.
func (t *Tracer) Request(ctx context.Context, outbound bool, req *wire.Request) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	name, kind := "edge "+req.Service, oteltrace.SpanKindServer
	if outbound {
		name, kind = "outbound "+req.Service, oteltrace.SpanKindClient
	}
	ctx, sp := t.tr.Start(parent(ctx, req.Trace), name, oteltrace.WithSpanKind(kind), oteltrace.WithAttributes(
		attribute.String("griddle.service", req.Service), attribute.String("griddle.version", req.Version),
		semconv.HTTPRequestMethodKey.String(req.Method), semconv.URLPath(req.Path)))
	if sp.IsRecording() {
		req.Trace = contextOf(ctx)
	}
	return ctx, Span{sp}
}

// Attempt starts the span of one dispatch attempt of the marshalled
// request msg to the instance at addr, under the span ctx carries, and
// appends the attempt's trace context to msg so that the sidecar's span
// is its child. It does nothing unless ctx's span is recording.
func Attempt(ctx context.Context, msg []byte, service string, attempt int, addr string) ([]byte, Span) {
	p := oteltrace.SpanFromContext(ctx)
	if !p.IsRecording() {
		return msg, Span{}
	}
	ctx, sp := p.TracerProvider().Tracer(instrumentation).Start(ctx, "dispatch "+service, oteltrace.WithSpanKind(oteltrace.SpanKindClient),
		oteltrace.WithAttributes(attribute.Int("griddle.attempt", attempt), attribute.String("griddle.instance.address", addr)))
	return appendTrace(msg, contextOf(ctx)), Span{sp}
}

// Hop is the sidecar's span of one request and its child, the hop to the
// handler and back.
type Hop struct {
	sidecar, handler oteltrace.Span
}

// Hop starts the sidecar's span of the marshalled request msg (a child of
// the trace context in it) and the span of its hop to the handler, and
// appends the hop's trace context to msg: the handler's own calls are its
// children.
func (t *Tracer) Hop(msg []byte, service, version string) ([]byte, Hop) {
	if t == nil {
		return msg, Hop{}
	}
	ctx, sc := t.tr.Start(parent(context.Background(), peekTrace(msg)), "sidecar "+service, oteltrace.WithSpanKind(oteltrace.SpanKindServer),
		oteltrace.WithAttributes(attribute.String("griddle.service", service), attribute.String("griddle.version", version)))
	if !sc.IsRecording() {
		return msg, Hop{}
	}
	ctx, hs := t.tr.Start(ctx, "handler "+service, oteltrace.WithSpanKind(oteltrace.SpanKindClient))
	return appendTrace(msg, contextOf(ctx)), Hop{sidecar: sc, handler: hs}
}

// End ends both spans with the handler's marshalled answer reply, or the
// error of the hop.
func (h Hop) End(reply []byte, err error) {
	if h.sidecar == nil {
		return
	}
	var status int
	if err == nil {
		st, code, _ := wire.PeekReply(reply)
		status = int(st)
		if code != wire.Code_CODE_OK {
			status = code.HTTPStatus()
		}
	} else {
		h.handler.RecordError(err)
		h.handler.SetStatus(codes.Error, err.Error())
	}
	Span{h.handler}.End(status)
	Span{h.sidecar}.End(status)
}

// Field numbers of the envelope's trace context (envelope.proto).
const (
	fieldRequestTrace     = 13
	fieldTraceTraceparent = 1
	fieldTraceTracestate  = 2
)

// appendTrace appends tr as the trace field of the marshalled request
// msg: a message field appended again merges into the earlier one, so
// its traceparent replaces the earlier one and the tracestate stays.
func appendTrace(msg []byte, tr *wire.Trace) []byte {
	if tr == nil {
		return msg
	}
	var inner []byte
	inner = protowire.AppendTag(inner, fieldTraceTraceparent, protowire.BytesType)
	inner = protowire.AppendString(inner, tr.Traceparent)
	msg = protowire.AppendTag(msg, fieldRequestTrace, protowire.BytesType)
	return protowire.AppendBytes(msg, inner)
}

// peekTrace reads the trace context of the marshalled request msg, as a
// decoder would (the last traceparent and tracestate win); nil if absent
// or malformed.
func peekTrace(msg []byte) *wire.Trace {
	var tr *wire.Trace
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil
		}
		msg = msg[n:]
		if num != fieldRequestTrace || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, msg)
			if n < 0 {
				return nil
			}
			msg = msg[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(msg)
		if n < 0 {
			return nil
		}
		msg = msg[n:]
		if tr == nil {
			tr = &wire.Trace{}
		}
		for len(v) > 0 {
			inum, ityp, m := protowire.ConsumeTag(v)
			if m < 0 {
				return nil
			}
			v = v[m:]
			if ityp != protowire.BytesType {
				if m = protowire.ConsumeFieldValue(inum, ityp, v); m < 0 {
					return nil
				}
				v = v[m:]
				continue
			}
			s, m := protowire.ConsumeString(v)
			if m < 0 {
				return nil
			}
			v = v[m:]
			switch inum {
			case fieldTraceTraceparent:
				tr.Traceparent = s
			case fieldTraceTracestate:
				tr.Tracestate = s
			}
		}
	}
	return tr
}
