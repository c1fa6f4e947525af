package flows_test

import (
	"strings"
	"testing"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
)

// A flow that does not validate has no layout, and says why.
func TestLayoutOfABadFlow(t *testing.T) {
	f := flows.New("bad")
	flows.From(f, "lines", flowstest.NewInput[string](1)) // no view, no sink
	if layout, err := flows.Layout(f); err == nil || !strings.Contains(err.Error(), "no view and no sink") {
		t.Fatalf("Layout() = %q, %v", layout, err)
	}
}
