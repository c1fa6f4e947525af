package flows_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// A word count written with this package alone, run by the flowstest
// harness: a keyed view of the count per word and an aggregate view of
// the total.
func Example() {
	in := flowstest.NewInput[string](2)
	f := flows.New("wordcount", flows.WithFragments(4))
	words := flows.FlatMap(flows.From(f, "lines", in), func(line string, emit func(string)) {
		for _, w := range strings.Fields(line) {
			emit(w)
		}
	})
	byWord := flows.KeyBy(words, flows.Identity[string])
	flows.Count(byWord).View("words")
	flows.AggregateView(byWord.Values(), "total", splice.Count[string](), flows.Identity[string])

	d, err := flowstest.New(f, time.Unix(0, 0))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()
	in.Push(0, "to be or not", "to be")
	in.Push(1, "that is the question")
	if err := d.Drain(); err != nil {
		fmt.Println(err)
		return
	}
	to, err := flowstest.GetOf[int64](d, "words", "to")
	if err != nil {
		fmt.Println(err)
		return
	}
	total, err := flowstest.ValueOf[int64](d, "total")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("to:", to, "total:", total)
	// Output: to: 2 total: 10
}

// A flow's layout, as its checkpoints are laid out: a count declared
// before this one, or another state type, would not start on them.
func ExampleLayout() {
	f := flows.New("wordcount", flows.WithFragments(4))
	lines := flows.From(f, "lines", flowstest.NewInput[string](2))
	flows.Count(flows.KeyBy(lines, flows.Identity[string])).View("lines")
	layout, err := flows.Layout(f)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, line := range layout {
		fmt.Println(line)
	}
	// Output:
	// layout 1
	// fragments 4
	// source 0: "lines"
	// stage 0: KeyBy string of string from source 0
	// operator 0 of stage 0: table of int64 by string, view "lines"
}
