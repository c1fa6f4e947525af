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
