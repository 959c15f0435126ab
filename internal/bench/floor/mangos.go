package floor

import (
	"bytes"
	"fmt"
	"time"

	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol/rep"
	"go.nanomsg.org/mangos/v3/protocol/req"
	_ "go.nanomsg.org/mangos/v3/transport/tcp" // registers tcp://
)

// MangosTCP is the floor of the edge → sidecar hop: a mangos v3 REQ socket
// dialled over tcp to a REP socket on 127.0.0.1, with Config.InFlight
// contexts on each side (one per worker), as the edge's dispatcher and the
// sidecar use them; the REP side echoes each message it receives. No
// envelope is encoded, no HTTP is parsed: what is left is mangos' own cost
// per message (its pipe goroutines, queues and framing) and the kernel's
// tcp loopback. The edge → sidecar hop costs at least this.
func MangosTCP() Floor {
	return Floor{Name: "mangos-tcp", Hop: "edge → sidecar (mangos REQ/REP, tcp)", open: openMangos}
}

func openMangos(cfg Config, _ string) (*Rig, error) {
	r := &Rig{}
	srv, err := rep.NewSocket()
	if err != nil {
		return nil, err
	}
	r.onClose(srv.Close)
	l, err := srv.NewListener("tcp://127.0.0.1:0", nil)
	if err == nil {
		err = l.Listen()
	}
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	for range cfg.InFlight {
		c, err := srv.OpenContext()
		if err != nil {
			_ = r.Close()
			return nil, err
		}
		r.wg.Go(func() {
			for {
				m, err := c.RecvMsg()
				if err != nil {
					return // the socket closed
				}
				if err := c.SendMsg(m); err != nil {
					m.Free()
					return
				}
			}
		})
	}

	cli, err := req.NewSocket()
	if err != nil {
		_ = r.Close()
		return nil, err
	}
	r.onClose(cli.Close)
	// As the dispatcher: no resend by mangos; the caller retries.
	if err := cli.SetOption(mangos.OptionRetryTime, time.Duration(0)); err != nil {
		_ = r.Close()
		return nil, err
	}
	if err := cli.Dial(l.Address()); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("dial %s: %w", l.Address(), err)
	}
	ctxs := make([]mangos.Context, cfg.InFlight)
	for i := range ctxs {
		if ctxs[i], err = cli.OpenContext(); err != nil {
			_ = r.Close()
			return nil, err
		}
	}
	payload := bytes.Repeat([]byte{'m'}, cfg.Size)
	r.trip = func(w int) error {
		m := mangos.NewMessage(len(payload))
		m.Body = append(m.Body, payload...)
		if err := ctxs[w].SendMsg(m); err != nil {
			m.Free()
			return err
		}
		reply, err := ctxs[w].RecvMsg()
		if err != nil {
			return err
		}
		ok := bytes.Equal(reply.Body, payload)
		reply.Free()
		if !ok {
			return ErrEcho
		}
		return nil
	}
	return r, nil
}
