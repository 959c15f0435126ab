package bench

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Scenarios.
const (
	// ScenarioStatic asks the hello service for a greeting: a static reply,
	// the cost of the path alone.
	ScenarioStatic = "static"
	// ScenarioProfile reads a profile chosen at random among the seeded
	// ids 1..Profiles: with the store wired in, an uncached store read per
	// request.
	ScenarioProfile = "profile"
)

// service is the example service a scenario exercises: its handler binary's
// name under services/.
func service(scenario string) string {
	if needsProfiles(scenario) {
		return "profiles"
	}
	return "hello"
}

// probePaths are the requests of the scenario that must answer 200 once a
// target is ready.
func probePaths(scenario string) []string {
	if writes(scenario) {
		return []string{probePath(ScenarioProfile), "/messages/1"}
	}
	return []string{probePath(scenario)}
}

// probePath is a request of the scenario that must answer 200 once a
// target is ready.
func probePath(scenario string) string {
	if scenario == ScenarioProfile {
		return "/profiles/1"
	}
	return "/hello/greet?name=bench"
}

// targeter returns the requests of scenario against base
// ("http://127.0.0.1:port"). It is safe for concurrent use, as vegeta's
// workers call it at once.
func targeter(scenario, base string, profiles int) vegeta.Targeter {
	if writes(scenario) {
		return writeTargeter(scenario, base, profiles)
	}
	if scenario == ScenarioProfile {
		prefix := base + "/profiles/"
		return func(t *vegeta.Target) error {
			t.Method = http.MethodGet
			t.URL = prefix + strconv.Itoa(1+rand.IntN(profiles))
			return nil
		}
	}
	u := base + probePath(ScenarioStatic)
	return func(t *vegeta.Target) error {
		t.Method = http.MethodGet
		t.URL = u
		return nil
	}
}

// profileJSON is the stored and served form of seeded profile id, as the
// profiles service writes it.
func profileJSON(id int) []byte {
	return fmt.Appendf(nil, `{"id":%d,"name":"user-%d"}`+"\n", id, id)
}
