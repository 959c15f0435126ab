package storehttp_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
	"github.com/griddle-mesh/griddle/internal/store/storehttp/storepb"
)

// Any body sent to any operation of an open transaction is answered with a
// status, never a panic or a hang.
func FuzzServerOp(f *testing.F) {
	for _, m := range []proto.Message{
		&storepb.GetRequest{Key: []byte("k")},
		&storepb.RangeRequest{Begin: []byte("a"), End: []byte("\xff"), Limit: -1, Reverse: true},
		&storepb.SetRequest{Key: []byte("k"), Value: []byte("v")},
		&storepb.ClearRangeRequest{End: []byte("z")},
	} {
		b, _ := proto.Marshal(m)
		f.Add("get", b)
		f.Add("range", b)
		f.Add("set", b)
		f.Add("clearRange", b)
	}
	f.Add("commit", []byte{0xff})
	bk, err := badgerstore.Open(f.Context(), badgerstore.Config{InMemory: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { bk.Close() })
	srv := storehttp.NewServer(bk)
	f.Cleanup(func() { srv.Close() })
	f.Fuzz(func(t *testing.T, op string, body []byte) {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/spaces/svc/txns", nil))
		if w.Code != http.StatusOK {
			t.Fatalf("begin: %d", w.Code)
		}
		var begun storepb.BeginResponse
		if err := proto.Unmarshal(w.Body.Bytes(), &begun); err != nil {
			t.Fatal(err)
		}
		base := "/v1/txns/" + begun.Txn + "/"
		w = httptest.NewRecorder()
		req, err := http.NewRequest(http.MethodPost, base+op, bytes.NewReader(body))
		if err != nil {
			return // not a URL
		}
		srv.ServeHTTP(w, req)
		if w.Code == 0 || w.Code >= 500 && w.Code != http.StatusServiceUnavailable {
			t.Errorf("op %q: status %d", op, w.Code)
		}
		w = httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest(http.MethodPost, base+"abort", nil))
	})
}
