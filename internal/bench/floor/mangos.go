package floor

import (
	"bytes"
	"fmt"
	"time"

	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol/rep"
	"go.nanomsg.org/mangos/v3/protocol/req"
	_ "go.nanomsg.org/mangos/v3/transport/tcp" // registers tcp://

	"github.com/griddle-mesh/griddle/internal/reqrep"
)

// MangosTCP is the floor of the edge → sidecar hop: a mangos v3 REQ socket
// dialled over tcp to a REP socket on 127.0.0.1, with Config.InFlight
// contexts on each side (one per worker), as the edge's dispatcher and the
// sidecar use them; the REP side echoes each message it receives. No
// envelope is encoded, no HTTP is parsed: what is left is the protocols'
// cost per message (package reqrep's, as the mesh runs them) and mangos'
// framing and the kernel's tcp loopback. The edge → sidecar hop costs at
// least this.
func MangosTCP() Floor {
	return Floor{Name: "mangos-tcp", Hop: "edge → sidecar (mangos REQ/REP, tcp)", open: func(cfg Config, _ string) (*Rig, error) {
		return openMangos(cfg, reqrep.NewReq, func(*Rig) (mangos.Socket, error) {
			// As the sidecar: each request answered on the pipe's reader.
			return reqrep.NewRep(func(m *mangos.Message, rp reqrep.Replier) { _ = rp.Reply(m) }), nil
		})
	}}
}

// MangosTCPStock is MangosTCP with mangos' own REQ and REP protocols
// (protocol/req, protocol/rep) instead of package reqrep's: what the hop
// would cost with them.
func MangosTCPStock() Floor {
	return Floor{Name: "mangos-tcp-stock", Hop: "edge → sidecar with mangos' own REQ/REP (not in the path)", open: func(cfg Config, _ string) (*Rig, error) {
		return openMangos(cfg, req.NewSocket, func(r *Rig) (mangos.Socket, error) {
			return stockEcho(cfg, r)
		})
	}}
}

// stockEcho is a REP socket of mangos' own with a context per worker, each
// echoing what it receives, as the sidecar used them.
func stockEcho(cfg Config, r *Rig) (mangos.Socket, error) {
	srv, err := rep.NewSocket()
	if err != nil {
		return nil, err
	}
	for range cfg.InFlight {
		c, err := srv.OpenContext()
		if err != nil {
			_ = srv.Close()
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
	return srv, nil
}

// openMangos connects a REQ socket from newReq to the echoing REP socket
// that serve makes.
func openMangos(cfg Config, newReq func() (mangos.Socket, error), serve func(*Rig) (mangos.Socket, error)) (*Rig, error) {
	r := &Rig{}
	srv, err := serve(r)
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

	cli, err := newReq()
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
