package metrics

import (
	"testing"

	"github.com/griddle-mesh/griddle/internal/wire"
)

func TestClass(t *testing.T) {
	for status, want := range map[int]string{200: "2xx", 204: "2xx", 404: "4xx", 499: "4xx", 503: "5xx", 101: "1xx", 0: "other", 600: "other"} {
		if got := Class(status); got != want {
			t.Errorf("Class(%d) = %q, want %q", status, got, want)
		}
	}
}

func TestServedVersion(t *testing.T) {
	r := &wire.Reply{Headers: []*wire.Header{{Name: "Content-Type", Values: []string{"text/plain"}}, {Name: wire.HeaderVersion, Values: []string{"v2"}}}}
	if got := ServedVersion(r); got != "v2" {
		t.Errorf("ServedVersion = %q, want v2", got)
	}
	if got := ServedVersion(nil); got != "" {
		t.Errorf("ServedVersion(nil) = %q, want \"\"", got)
	}
}
