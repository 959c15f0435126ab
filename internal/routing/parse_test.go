package routing

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// parseGolden returns what the golden file of a document holds: the
// canonical JSON of the parsed document, or the error text.
func parseGolden(t *testing.T, b []byte) string {
	t.Helper()
	d, err := Parse(b)
	if err != nil {
		if d != nil {
			t.Errorf("Parse returned a document and an error")
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("errors.Is(err, ErrInvalid) = false for %v", err)
		}
		return err.Error() + "\n"
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		t.Fatalf("json.MarshalIndent: %v", err)
	}
	return string(out) + "\n"
}

func TestParseGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			got := parseGolden(t, in)
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("got:\n%s\nwant (%s):\n%s", got, golden, want)
			}
			isValid := strings.HasPrefix(name, "valid-")
			if _, err := Parse(in); (err == nil) != isValid {
				t.Errorf("Parse error = %v, want valid: %v (files named valid-* must parse)", err, isValid)
			}
		})
	}
}

// TestParseFieldErrors checks that every problem is a *FieldError naming a field.
func TestParseFieldErrors(t *testing.T) {
	_, err := Parse([]byte("service: Foo\nretries: {attempts: 0}\nversions: [{to: {v1: 90}}]\n"))
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("got %v, want a *FieldError", err)
	}
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		fields = append(fields, e.(*FieldError).Field)
	}
	want := []string{"service", "retries.attempts", "versions[0].to"}
	if !reflect.DeepEqual(fields, want) {
		t.Errorf("got fields %q, want %q", fields, want)
	}
}

func TestValidateNil(t *testing.T) {
	var d *Document
	if err := d.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("got %v, want ErrInvalid", err)
	}
}

func TestVersionNames(t *testing.T) {
	d, err := Parse([]byte("service: s\nversions:\n- match: {pathPrefix: /b}\n  to: {v3: 100}\n- to: {v1: 90, v3: 10}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.VersionNames(), []string{"v1", "v3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseBudget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"10%", 0.1, true},
		{"100%", 1, true},
		{"0.5%", 0.005, true},
		{"", DefaultBudget, true},
		{"0%", 0, false},
		{"101%", 0, false},
		{"10", 0, false},
		{"ten%", 0, false},
		{"NaN%", 0, false},
		{"-5%", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseBudget(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("ParseBudget(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v, want it to wrap ErrInvalid", err)
			}
		})
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts
// survives json.Marshal and a second Parse unchanged.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := Parse(in)
		if err != nil {
			if d != nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, %v; want nil and an ErrInvalid", d, err)
			}
			return
		}
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		d2, err := Parse(b)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		if !reflect.DeepEqual(d, d2) {
			t.Fatalf("re-parse differs:\n got %#v\nwant %#v", d2, d)
		}
	})
}

func TestGRPCMethodsValidated(t *testing.T) {
	_, err := Parse([]byte("service: p\nretries: {attempts: 2, on: [unavailable], grpcMethods: [/pkg.Svc/Get, Get]}\nversions: [{to: {v1: 100}}]\n"))
	if err == nil || !strings.Contains(err.Error(), "retries.grpcMethods[1]") {
		t.Fatalf("got %v, want retries.grpcMethods[1] named", err)
	}
	if _, err := Parse([]byte("service: p\nretries: {attempts: 2, grpcMethods: [/pkg.Svc/Get]}\nversions: [{to: {v1: 100}}]\n")); err != nil {
		t.Fatal(err)
	}
}
