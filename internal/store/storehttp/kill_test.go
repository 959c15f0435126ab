package storehttp_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
)

// storeEnv makes the test binary a store process (see TestMain): a Server
// over Badger in the directory it names, on a free port it prints.
const storeEnv = "STOREHTTP_TEST_STORE_DIR"

func storeProcess(dir string) int {
	b, err := badgerstore.Open(context.Background(), badgerstore.Config{Dir: dir})
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	fmt.Println(ln.Addr())
	_ = http.Serve(ln, storehttp.NewServer(b)) // until killed
	return 1
}

// A store process killed (SIGKILL) right after 1,000 writes its clients
// had acknowledged loses none of them.
func TestStoreProcessKilled(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), storeEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	defer kill()
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("store process: %v", err)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer hc.CloseIdleConnections()
	s, err := storehttp.NewClient(hc, "http://"+strings.TrimSpace(addr)).Space("messages")
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 10, 100
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				err := s.Transact(context.Background(), func(tx store.Tx) error {
					if err := tx.Set(fmt.Appendf(nil, "m/%d/%03d", w, i), []byte("hello")); err != nil {
						return err
					}
					return tx.SetStamped([]byte("log/"), fmt.Appendf(nil, "%d/%03d", w, i))
				})
				if err != nil {
					t.Errorf("Transact: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	kill() // at once, after the last acknowledgement

	b, err := badgerstore.Open(t.Context(), badgerstore.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	local, err := b.Space("messages")
	if err != nil {
		t.Fatal(err)
	}
	var msgs, evs int
	err = local.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		kvs, err := tx.Range([]byte("m/"), []byte("m0"), store.RangeOptions{})
		msgs = len(kvs)
		if err != nil {
			return err
		}
		kvs, err = tx.Range([]byte("log/"), []byte("log0"), store.RangeOptions{})
		evs = len(kvs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if msgs != writers*each || evs != writers*each {
		t.Errorf("after kill -9: %d messages and %d events read back, want %d of each", msgs, evs, writers*each)
	}
}
