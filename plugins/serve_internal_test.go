package plugins

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

func TestSubscribeRejectsBadDeclarations(t *testing.T) {
	for name, opt := range map[string]Option{
		"bad publisher": Subscribe("Messages", "message.sent", "/x"),
		"bad topic":     Subscribe("messages", "", "/x"),
		"relative path": Subscribe("messages", "message.sent", "x"),
	} {
		var stderr bytes.Buffer
		if code := serve(http.NotFoundHandler(), &stderr, opt); code != 1 || !strings.Contains(stderr.String(), "Subscribe") {
			t.Errorf("%s: exit %d, stderr %q; want 1 and the option named", name, code, stderr.String())
		}
	}
}
