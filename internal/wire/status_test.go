package wire_test

import (
	"net/http"
	"testing"

	"github.com/griddle-mesh/griddle/internal/wire"
)

// Every code has one status and one error code, for the edge's answers and
// the sidecar's metrics alike.
func TestCodeStatus(t *testing.T) {
	for _, c := range []struct {
		code   wire.Code
		status int
		name   string
	}{
		{wire.Code_CODE_DEADLINE_EXCEEDED, http.StatusGatewayTimeout, "deadline_exceeded"},
		{wire.Code_CODE_UNAVAILABLE, http.StatusServiceUnavailable, "unavailable"},
		{wire.Code_CODE_OVERLOADED, http.StatusServiceUnavailable, "unavailable"},
		{wire.Code_CODE_NO_INSTANCE, http.StatusBadGateway, "no_instance"},
		{wire.Code_CODE_BAD_REQUEST, http.StatusBadRequest, "bad_request"},
		{wire.Code_CODE_FORBIDDEN, http.StatusForbidden, "forbidden"},
		{wire.Code_CODE_INTERNAL, http.StatusBadGateway, "bad_gateway"},
		{wire.Code(99), http.StatusBadGateway, "bad_gateway"}, // newer than this build
	} {
		if got := c.code.HTTPStatus(); got != c.status {
			t.Errorf("%v: HTTPStatus() = %d, want %d", c.code, got, c.status)
		}
		if got := c.code.ErrorCode(); got != c.name {
			t.Errorf("%v: ErrorCode() = %q, want %q", c.code, got, c.name)
		}
	}
	if got := (&wire.Reply{Status: 418}).HTTPStatus(); got != 418 {
		t.Errorf("a handler's answer: got %d, want its own 418", got)
	}
}
