package reqrep_test

import (
	"fmt"

	"go.nanomsg.org/mangos/v3"
	_ "go.nanomsg.org/mangos/v3/transport/inproc"

	"github.com/griddle-mesh/griddle/internal/reqrep"
)

// A REP socket that answers on its pipes' readers, and a REQ context that
// sends a request and waits for the answer.
func Example() {
	rep := reqrep.NewRep(func(m *mangos.Message, r reqrep.Replier) {
		m.Body = append([]byte("hello, "), m.Body...)
		_ = r.Reply(m) // here, or later from any goroutine
	})
	defer rep.Close()
	if err := rep.Listen("inproc://example"); err != nil {
		fmt.Println(err)
		return
	}

	req, _ := reqrep.NewReq()
	defer req.Close()
	if err := req.Dial("inproc://example"); err != nil {
		fmt.Println(err)
		return
	}
	c, _ := req.OpenContext()
	m := mangos.NewMessage(5)
	m.Body = append(m.Body, "world"...)
	if err := c.SendMsg(m); err != nil {
		fmt.Println(err)
		return
	}
	reply, err := c.RecvMsg()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(reply.Body))
	reply.Free()
	// Output: hello, world
}
