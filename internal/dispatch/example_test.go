package dispatch_test

import (
	"context"
	"fmt"
	"time"

	"go.nanomsg.org/mangos/v3/protocol/rep"
	_ "go.nanomsg.org/mangos/v3/transport/tcp"
	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/dispatch"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// catalog is a fixed Endpoints.
type catalog map[string][]discovery.Instance

func (c catalog) Instances(service string) []discovery.Instance { return c[service] }

func Example() {
	// A sidecar: a REP socket answering each wire.Request with a wire.Reply.
	sock, _ := rep.NewSocket()
	defer sock.Close()
	l, _ := sock.NewListener("tcp://127.0.0.1:0", nil)
	_ = l.Listen()
	go func() {
		for {
			m, err := sock.RecvMsg()
			if err != nil {
				return // closed
			}
			var req wire.Request
			_ = proto.Unmarshal(m.Body, &req)
			b, _ := proto.Marshal(&wire.Reply{Id: req.Id, Status: 200, Body: []byte("hello " + req.Path)})
			m.Body = append(m.Body[:0], b...)
			_ = sock.SendMsg(m)
		}
	}()

	d, err := dispatch.New(dispatch.Config{
		Endpoints: catalog{"profiles": {{ID: "p1", Service: "profiles", Version: "v1", Address: l.Address()}}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := d.Do(ctx, &wire.Request{Id: "r1", Service: "profiles", Method: "GET", Path: "/profiles/7"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(reply.Status, string(reply.Body))
	// Output: 200 hello /profiles/7
}
