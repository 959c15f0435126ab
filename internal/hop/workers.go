package hop

import (
	"sync"
	"time"
)

// Bounds of a connection's workers.
const (
	// maxIdleWorkers bounds the workers kept waiting for the next stream.
	maxIdleWorkers = 128
	// WorkerIdle is how long a worker waits for a stream before it exits:
	// the goroutines a burst of streams started stay that long after it.
	WorkerIdle = 10 * time.Second
)

// workers runs the streams the peer opens on goroutines that are kept for
// the next one: their stacks are already grown, and no goroutine is made
// per request while the rate holds.
type workers struct {
	mu     sync.Mutex
	idle   []*worker     // most recently idle last
	closed bool          // stop: no worker waits any more
	quit   chan struct{} // closed by stop
}

type worker struct {
	work chan job // one at a time
}

// job is one stream the peer opened, to serve: a value, so that handing it
// to a worker costs no closure.
type job struct {
	s       *Stream
	unary   bool   // a unary call (Config.Unary), else a request (Config.Serve)
	payload []byte // the unary call's
}

func (j job) do() {
	if j.unary {
		j.s.serveUnary(j.s.c.cfg.Unary, j.payload)
	} else {
		j.s.c.cfg.Serve(j.s)
	}
}

func newWorkers() workers { return workers{quit: make(chan struct{})} }

// stop lets idle workers go and keeps the busy ones from waiting again;
// it does not wait for the work under way.
func (ws *workers) stop() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if !ws.closed {
		ws.closed = true
		close(ws.quit)
	}
}

// run runs j on an idle worker, or on a new one.
func (ws *workers) run(j job) {
	ws.mu.Lock()
	if n := len(ws.idle); n > 0 {
		w := ws.idle[n-1]
		ws.idle[n-1] = nil
		ws.idle = ws.idle[:n-1]
		ws.mu.Unlock()
		w.work <- j
		return
	}
	ws.mu.Unlock()
	w := &worker{work: make(chan job, 1)}
	go ws.loop(w, j)
}

// loop runs j, then whatever it is given, until it has waited WorkerIdle
// for work or there are enough idle workers.
func (ws *workers) loop(w *worker, j job) {
	var t *time.Timer
	for {
		j.do()
		j = job{}
		ws.mu.Lock()
		if ws.closed || len(ws.idle) >= maxIdleWorkers {
			ws.mu.Unlock()
			return
		}
		ws.idle = append(ws.idle, w)
		ws.mu.Unlock()
		if t == nil {
			t = time.NewTimer(WorkerIdle)
		} else {
			t.Reset(WorkerIdle)
		}
		select {
		case j = <-w.work:
			continue
		case <-t.C:
		case <-ws.quit:
		}
		ws.mu.Lock()
		for i, x := range ws.idle {
			if x == w { // still idle: leave
				ws.idle = append(ws.idle[:i], ws.idle[i+1:]...)
				ws.mu.Unlock()
				return
			}
		}
		ws.mu.Unlock()
		j = <-w.work // taken just as the timer fired: the work is on its way
	}
}
