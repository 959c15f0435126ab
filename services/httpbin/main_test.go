package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/plugins/plugintest"
)

func TestHTTPBin(t *testing.T) {
	s := plugintest.Start(t, ".", plugintest.WithArgs("-max-body-bytes", "4096"))
	c := s.Client()

	t.Run("get echoes the query", func(t *testing.T) {
		resp, err := c.Get(s.URL() + "/get?a=1&a=2")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got struct {
			Args map[string][]string `json:"args"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || strings.Join(got.Args["a"], ",") != "1,2" {
			t.Errorf("got %d args %v, want 200 a=[1 2]", resp.StatusCode, got.Args)
		}
	})
	t.Run("status", func(t *testing.T) {
		resp, err := c.Get(s.URL() + "/status/418")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 418 {
			t.Errorf("got %d, want 418", resp.StatusCode)
		}
	})
	t.Run("max-body-bytes is the limit", func(t *testing.T) {
		resp, err := c.Post(s.URL()+"/post", "text/plain", strings.NewReader(strings.Repeat("x", 5000)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("5,000 bytes against -max-body-bytes 4096: got %d, want 400 or 413", resp.StatusCode)
		}
	})
}

func TestNewHandlerRejectsBadLimits(t *testing.T) {
	for _, tt := range []struct {
		name     string
		maxBody  int64
		duration time.Duration
		field    string
	}{
		{"zero body", 0, time.Second, "-max-body-bytes"},
		{"negative duration", 1, -time.Second, "-max-duration"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newHandler(tt.maxBody, tt.duration)
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("got %v, want an error naming %s", err, tt.field)
			}
		})
	}
}
