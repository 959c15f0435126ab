package main

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/plugins"
	"github.com/griddle-mesh/griddle/plugins/plugintest"
)

func TestHello(t *testing.T) {
	s := plugintest.Start(t, ".")
	c := s.Client()

	t.Run("greet without deadline", func(t *testing.T) {
		resp, body := get(t, c, s.URL()+"/hello/greet?name=ada", nil)
		if resp.StatusCode != http.StatusOK || body != "hello, ada" {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, "hello, ada")
		}
		if got := resp.Header.Get("X-Seen-Deadline"); got != "none" {
			t.Errorf("X-Seen-Deadline: got %q, want none", got)
		}
	})

	t.Run("greet with deadline", func(t *testing.T) {
		d := time.Now().Add(3 * time.Second)
		want := plugins.FormatDeadline(d)
		resp, _ := get(t, c, s.URL()+"/hello/greet?name=bo", http.Header{plugins.HeaderDeadline: {want}})
		if got := resp.Header.Get("X-Seen-Deadline"); got != want {
			t.Errorf("X-Seen-Deadline: got %q, want %q", got, want)
		}
	})

	t.Run("echo", func(t *testing.T) {
		body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		req, err := http.NewRequest(http.MethodPost, s.URL()+"/hello/a%2Fb/../echo?x=1&x=2&y=%20", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Path, req.URL.RawPath = "/hello/echo", ""
		req.Header.Set("Content-Type", "application/x-test")
		req.Header.Add("X-Test-Multi", "one")
		req.Header.Add("X-Test-Multi", "two")
		req.Header.Add("X-Test-Multi", "three")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, body) {
			t.Errorf("body: got %d bytes, want %d identical bytes", len(got), len(body))
		}
		for _, c := range []struct{ name, got, want string }{
			{"Content-Type", resp.Header.Get("Content-Type"), "application/x-test"},
			{"X-Test-Multi", strings.Join(resp.Header.Values("X-Test-Multi"), ","), "one,two,three"},
			{"X-Echo-Method", resp.Header.Get("X-Echo-Method"), "POST"},
			{"X-Echo-Query", resp.Header.Get("X-Echo-Query"), "x=1&x=2&y=%20"},
			{"X-Echo-Path", resp.Header.Get("X-Echo-Path"), "/hello/echo"},
		} {
			if c.got != c.want {
				t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
			}
		}
	})

	t.Run("status", func(t *testing.T) {
		resp, _ := get(t, c, s.URL()+"/hello/status?code=418", nil)
		if resp.StatusCode != http.StatusTeapot {
			t.Errorf("got %d, want 418", resp.StatusCode)
		}
	})

	t.Run("pid", func(t *testing.T) {
		_, body := get(t, c, s.URL()+"/hello/pid", nil)
		if want := strconv.Itoa(s.Host().PID()); body != want {
			t.Errorf("got %q, want %q", body, want)
		}
	})

	t.Run("sleep ends at deadline", func(t *testing.T) {
		start := time.Now()
		d := start.Add(200 * time.Millisecond)
		resp, _ := get(t, c, s.URL()+"/hello/sleep?ms=5000", http.Header{plugins.HeaderDeadline: {plugins.FormatDeadline(d)}})
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("sleep took %v, want it to stop at the 200ms deadline", took)
		}
		if resp.StatusCode != http.StatusOK {
			t.Errorf("got %d, want 200", resp.StatusCode)
		}
	})
}

func get(t *testing.T, c *http.Client, url string, h http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}
