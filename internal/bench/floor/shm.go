package floor

import "github.com/griddle-mesh/griddle/internal/shmpipe"

// ShmMux is the floor of the sidecar → handler hop as it runs: the frames
// of UnixMux on one shared-memory pipe (package shmpipe) instead of the
// socket, its two ends in this process.
func ShmMux() Floor {
	return Floor{Name: "shm-mux", Hop: "sidecar → handler (shared-memory pipe, one multiplexed connection)", open: openShmMux}
}

func openShmMux(cfg Config, _ string) (*Rig, error) {
	client, server, err := shmpipe.Pair(0)
	if err != nil {
		return nil, err
	}
	r := &Rig{}
	r.onClose(server.Close)
	r.onClose(client.Close)
	r.wg.Go(func() { muxEcho(cfg, server) })
	muxClient(r, cfg, client)
	return r, nil
}
