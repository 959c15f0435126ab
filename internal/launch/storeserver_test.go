package launch

import (
	"strings"
	"testing"

	"github.com/griddle-mesh/griddle/internal/store/storehttp"
)

func TestStoreServerConfigValidate(t *testing.T) {
	tokens, err := storehttp.ParseTokens("profiles 0123456789abcdef0123\n")
	if err != nil {
		t.Fatal(err)
	}
	ok := StoreServerConfig{Listen: "127.0.0.1:7400", Dir: "d", Tokens: tokens}
	for _, tc := range []struct {
		name string
		mem  int
		want string // "" for valid
	}{
		{"default", 0, ""},
		{"minimum", 8, ""},
		{"maximum", 1024, ""},
		{"below the minimum", 7, "store: --memtable-mb: 7: want 8 to 1024"},
		{"negative", -1, "store: --memtable-mb: -1: want 8 to 1024"},
		{"above the maximum", 1025, "store: --memtable-mb: 1025: want 8 to 1024"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			c.MemTableMB = tc.mem
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("--memtable-mb %d: got %v, want no error", tc.mem, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("--memtable-mb %d: got %v, want %q", tc.mem, err, tc.want)
			}
		})
	}
	if got := ok.badger(nil).MemTableSize; got != 0 {
		t.Errorf("MemTableMB 0: MemTableSize %d, want 0 (badgerstore's default)", got)
	}
	c := ok
	c.MemTableMB = 8
	if got := c.badger(nil).MemTableSize; got != 8<<20 {
		t.Errorf("MemTableMB 8: MemTableSize %d, want %d", got, 8<<20)
	}
}
