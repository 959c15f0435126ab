package storehttp_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
	"github.com/griddle-mesh/griddle/internal/store/storehttp/storepb"
)

// A server holds at most its cap of open transactions: one more is
// refused at once with CODE_TOO_MANY_TRANSACTIONS (503), and once one
// ends a new one opens.
func TestMaxTransactions(t *testing.T) {
	b, err := badgerstore.Open(t.Context(), badgerstore.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const limit = 4
	srv := storehttp.NewServer(b, storehttp.WithMaxTransactions(limit))
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Close()

	post := func(path string) (int, []byte) {
		t.Helper()
		resp, err := ts.Client().Post(ts.URL+path, storehttp.ContentType, strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	begin := func() (int, string, *storepb.Error) {
		t.Helper()
		code, body := post("/v1/spaces/svc/txns")
		if code != http.StatusOK {
			var e storepb.Error
			_ = proto.Unmarshal(body, &e)
			return code, "", &e
		}
		var r storepb.BeginResponse
		if err := proto.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		return code, r.Txn, nil
	}
	var open []string
	for i := range limit {
		code, id, e := begin()
		if code != http.StatusOK {
			t.Fatalf("transaction %d of %d: %d %v", i+1, limit, code, e)
		}
		open = append(open, id)
	}
	code, _, e := begin()
	if code != http.StatusServiceUnavailable || e.GetCode() != storepb.Code_CODE_TOO_MANY_TRANSACTIONS || !strings.Contains(e.GetMessage(), "too many open transactions") {
		t.Fatalf("one over the cap: %d %v, want 503 CODE_TOO_MANY_TRANSACTIONS", code, e)
	}
	if code, _ := post("/v1/txns/" + open[0] + "/abort"); code >= 300 {
		t.Fatalf("abort: %d", code)
	}
	// The aborted transaction's goroutine leaves the table as it ends.
	for i := 0; ; i++ {
		code, _, e := begin()
		if code == http.StatusOK {
			break
		}
		if i > 100 {
			t.Fatalf("after an abort: still %d %v", code, e)
		}
	}
}

// A client's transaction that needs a server transaction while the cap
// is reached fails with ErrTooManyTransactions, without retrying.
func TestMaxTransactionsClientError(t *testing.T) {
	b, err := badgerstore.Open(t.Context(), badgerstore.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	srv := storehttp.NewServer(b, storehttp.WithMaxTransactions(1))
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Close()
	resp, err := ts.Client().Post(ts.URL+"/v1/spaces/svc/txns", storehttp.ContentType, strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s, err := storehttp.NewClient(ts.Client(), ts.URL).Space("svc")
	if err != nil {
		t.Fatal(err)
	}
	// A range read after a write runs as a server transaction.
	err = s.Transact(t.Context(), func(tx store.Tx) error {
		if err := tx.Set([]byte("k"), []byte("v")); err != nil {
			return err
		}
		_, err := tx.Range(nil, nil, store.RangeOptions{})
		return err
	})
	if !errors.Is(err, storehttp.ErrTooManyTransactions) {
		t.Fatalf("Transact with the cap reached = %v, want ErrTooManyTransactions", err)
	}
}
