package pluginhost

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"

	hclog "github.com/hashicorp/go-hclog"
)

// slogAdapter is an hclog.Logger that writes to a *slog.Logger, so that
// go-plugin's own messages land in the sidecar's log.
//
// go-plugin also parses the handler's stderr through Named(<binary name>);
// that child is switched off (hclog.Off) because the host reads the raw
// lines itself through lineLogger, which keeps their level.
type slogAdapter struct {
	l       *slog.Logger
	name    string
	off     bool
	offName string // the Named() child to switch off
	args    []any
}

var _ hclog.Logger = (*slogAdapter)(nil)

func newSlogAdapter(l *slog.Logger, offName string) *slogAdapter {
	return &slogAdapter{l: l, offName: offName}
}

func toSlogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (a *slogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if a.off || level == hclog.Off {
		return
	}
	lvl := toSlogLevel(level)
	ctx := context.Background()
	if !a.l.Enabled(ctx, lvl) {
		return
	}
	all := make([]any, 0, len(a.args)+len(args)+2)
	if a.name != "" {
		all = append(all, "logger", a.name)
	}
	all = append(all, a.args...)
	all = append(all, args...)
	a.l.Log(ctx, lvl, msg, all...)
}

func (a *slogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *slogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *slogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *slogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *slogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *slogAdapter) enabled(level hclog.Level) bool {
	return !a.off && a.l.Enabled(context.Background(), toSlogLevel(level))
}

func (a *slogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *slogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *slogAdapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *slogAdapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *slogAdapter) IsError() bool { return a.enabled(hclog.Error) }

func (a *slogAdapter) ImpliedArgs() []any { return a.args }

func (a *slogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.args = append(append([]any(nil), a.args...), args...)
	return &c
}

func (a *slogAdapter) Name() string { return a.name }

func (a *slogAdapter) Named(name string) hclog.Logger {
	c := *a
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	c.off = a.off || name == a.offName
	return &c
}

func (a *slogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	c.off = name == a.offName
	return &c
}

// SetLevel is a no-op: the level belongs to the slog handler.
func (a *slogAdapter) SetLevel(hclog.Level) {}

func (a *slogAdapter) GetLevel() hclog.Level {
	if a.off {
		return hclog.Off
	}
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if a.enabled(l) {
			return l
		}
	}
	return hclog.Off
}

func (a *slogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *slogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return &lineLogger{l: a.l, stream: a.name}
}

// lineLogger logs each line written to it as one record from the handler's
// output stream. A level is inferred from common prefixes and slog's text
// and JSON formats; anything else is Info. Safe for concurrent use.
type lineLogger struct {
	l      *slog.Logger
	stream string
	mu     sync.Mutex
	buf    []byte
	// inPanic routes every line after a Go panic header to Error.
	inPanic bool
}

// maxLine bounds a buffered partial line; longer lines are split.
const maxLine = 64 << 10

func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) >= maxLine {
				w.emit(w.buf)
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

// Flush logs a trailing partial line.
func (w *lineLogger) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = w.buf[:0]
	}
}

func (w *lineLogger) emit(line []byte) {
	s := strings.TrimRight(string(line), "\r")
	if s == "" {
		return
	}
	lvl := w.level(s)
	w.l.Log(context.Background(), lvl, s, "stream", w.stream)
}

func (w *lineLogger) level(s string) slog.Level {
	if strings.HasPrefix(s, "panic: ") || strings.HasPrefix(s, "fatal error: ") {
		w.inPanic = true
	}
	if w.inPanic {
		return slog.LevelError
	}
	for _, c := range []struct {
		marks []string
		lvl   slog.Level
	}{
		{[]string{"[ERROR]", "level=ERROR", `"level":"ERROR"`, `"@level":"error"`, " ERROR "}, slog.LevelError},
		{[]string{"[WARN]", "level=WARN", `"level":"WARN"`, `"@level":"warn"`, " WARN "}, slog.LevelWarn},
		{[]string{"[DEBUG]", "level=DEBUG", `"level":"DEBUG"`, `"@level":"debug"`, " DEBUG "}, slog.LevelDebug},
		{[]string{"[TRACE]", `"@level":"trace"`}, slog.LevelDebug - 4},
	} {
		for _, m := range c.marks {
			if strings.Contains(s, m) {
				return c.lvl
			}
		}
	}
	return slog.LevelInfo
}
