package badgerstore_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
)

// writerEnv makes the test binary a writer process (see TestMain): it
// commits writerCount transactions to the directory it names, then says
// so and waits to be killed.
const (
	writerEnv   = "BADGERSTORE_TEST_WRITER_DIR"
	writerCount = 1000
)

// writer is the child process of TestKillAfterAcknowledged.
func writer(dir string) int {
	ctx := context.Background()
	b, err := badgerstore.Open(ctx, badgerstore.Config{Dir: dir})
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	s, err := b.Space("svc")
	if err != nil {
		fmt.Println("space:", err)
		return 1
	}
	for i := range writerCount {
		err := s.Transact(ctx, func(tx store.Tx) error {
			if err := tx.Set(fmt.Appendf(nil, "k/%04d", i), []byte("v")); err != nil {
				return err
			}
			return tx.SetStamped([]byte("log/"), fmt.Appendf(nil, "%04d", i))
		})
		if err != nil {
			fmt.Println("transact:", err)
			return 1
		}
	}
	fmt.Println("acknowledged", writerCount)
	time.Sleep(time.Minute) // killed before
	return 0
}

// A store process killed (SIGKILL) right after its commits were
// acknowledged loses none of them.
func TestKillAfterAcknowledged(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), writerEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != fmt.Sprint("acknowledged ", writerCount) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("writer said %q, %v", line, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	b, err := badgerstore.Open(t.Context(), badgerstore.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s, err := b.Space("svc")
	if err != nil {
		t.Fatal(err)
	}
	var keys, events int
	err = s.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		kvs, err := tx.Range([]byte("k/"), []byte("k0"), store.RangeOptions{})
		keys = len(kvs)
		if err != nil {
			return err
		}
		kvs, err = tx.Range([]byte("log/"), []byte("log0"), store.RangeOptions{})
		events = len(kvs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if keys != writerCount || events != writerCount {
		t.Errorf("after kill -9: %d keys and %d stamped keys, want %d of each", keys, events, writerCount)
	}
}
