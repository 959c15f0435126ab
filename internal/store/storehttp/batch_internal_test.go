package storehttp

import (
	"bytes"
	"errors"
	"testing"
)

func sampleBatch() *batch {
	return &batch{
		reads:  []readCheck{{key: []byte("k"), digest: valueDigest([]byte("v"))}, {key: []byte{}}},
		ranges: []rangeCheck{{begin: []byte("a"), end: []byte{}, limit: 3, reverse: true, digest: rangeDigest(nil)}},
		writes: []write{{kind: writeSet, a: []byte("k"), b: []byte{}}, {kind: writeClear, a: []byte("x")},
			{kind: writeClearRange, a: []byte("a"), b: []byte("b")}, {kind: writeStamped, a: []byte("log/"), b: []byte("ev")}},
	}
}

func sameBatch(a, b *batch) bool {
	if len(a.reads) != len(b.reads) || len(a.ranges) != len(b.ranges) || len(a.writes) != len(b.writes) {
		return false
	}
	for i := range a.reads {
		if !bytes.Equal(a.reads[i].key, b.reads[i].key) || !bytes.Equal(a.reads[i].digest, b.reads[i].digest) {
			return false
		}
	}
	for i, r := range a.ranges {
		o := b.ranges[i]
		if !bytes.Equal(r.begin, o.begin) || !bytes.Equal(r.end, o.end) || r.limit != o.limit || r.reverse != o.reverse || !bytes.Equal(r.digest, o.digest) {
			return false
		}
	}
	for i, w := range a.writes {
		o := b.writes[i]
		if w.kind != o.kind || !bytes.Equal(w.a, o.a) || !bytes.Equal(w.b, o.b) {
			return false
		}
	}
	return true
}

func TestBatchRoundTrip(t *testing.T) {
	b := sampleBatch()
	got, err := decodeBatch(b.appendTo(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !sameBatch(b, got) {
		t.Errorf("decode(encode(%+v)) = %+v", b, got)
	}
}

// Whatever decodeBatch accepts encodes back to a batch it decodes the same.
func FuzzDecodeBatch(f *testing.F) {
	f.Add(sampleBatch().appendTo(nil))
	f.Add([]byte{})
	f.Add([]byte{0x1a, 0x02, 0x08, 0x09})
	f.Fuzz(func(t *testing.T, m []byte) {
		b, err := decodeBatch(m)
		if err != nil {
			if !errors.Is(err, errBadRequest) {
				t.Fatalf("error %v does not wrap errBadRequest", err)
			}
			return
		}
		again, err := decodeBatch(b.appendTo(nil))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !sameBatch(b, again) {
			t.Fatalf("round trip changed %+v into %+v", b, again)
		}
	})
}
