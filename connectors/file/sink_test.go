package file

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tessera-streams/tessera/flows"
)

func sinkOutputs(frag, n, m int) []flows.Output[line] {
	var out []flows.Output[line]
	for i := n; i < m; i++ {
		out = append(out, flows.Output[line]{ID: flows.OutputID{Fragment: frag, Offset: int64(i)},
			Value: line{Text: fmt.Sprintf("t%d", i)}})
	}
	return out
}

// readSink reads a sink file's lines, failing on a malformed one.
func readSink(t *testing.T, name string) []Line {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ls []Line
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %d of %s: %v: %q", len(ls)+1, name, err, sc.Text())
		}
		ls = append(ls, l)
	}
	return ls
}

func newFileSink(t *testing.T, dir string) *Sink[line] {
	t.Helper()
	s, err := NewSink[line](dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A restart after a crash: the file ends in a torn line, and the first
// Write delivers again outputs the file holds; each output ends up in the
// file once, in order.
func TestFileSinkRestartIsExact(t *testing.T) {
	dir := t.TempDir()
	s := newFileSink(t, dir)
	if err := s.Write(sinkOutputs(2, 0, 10)); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(sinkOutputs(2, 10, 15)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Write(sinkOutputs(2, 15, 16)); err == nil {
		t.Fatal("Write after Close: no error")
	}
	f, err := os.OpenFile(s.Path(2), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"id":"2/e/0/0/15/0/0","val`) // the crash tore a Write
	f.Close()

	s2 := newFileSink(t, dir)
	if err := s2.Write(sinkOutputs(2, 10, 20)); err != nil { // 10..14 were written
		t.Fatal(err)
	}
	if err := s2.Write(sinkOutputs(2, 20, 22)); err != nil {
		t.Fatal(err)
	}
	ls := readSink(t, s2.Path(2))
	if len(ls) != 22 {
		t.Fatalf("%d lines, want 22", len(ls))
	}
	for i, l := range ls {
		o := sinkOutputs(2, i, i+1)[0]
		if l.ID != o.ID.String() || string(l.Value) != fmt.Sprintf(`{"text":"t%d"}`, i) {
			t.Fatalf("line %d is %s %s, want %s", i, l.ID, l.Value, o.ID)
		}
	}
}

// A Write that does not hold the last line's id is written whole: the
// previous Write's success was recorded.
func TestFileSinkWritesAllWithoutMarker(t *testing.T) {
	dir := t.TempDir()
	s := newFileSink(t, dir)
	if err := s.Write(sinkOutputs(0, 0, 3)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := newFileSink(t, dir)
	if err := s2.Write(sinkOutputs(0, 3, 6)); err != nil {
		t.Fatal(err)
	}
	if ls := readSink(t, s2.Path(0)); len(ls) != 6 || ls[5].ID != sinkOutputs(0, 5, 6)[0].ID.String() {
		t.Fatalf("lines %v", ls)
	}
}

func TestFileSinkRefusesGarbage(t *testing.T) {
	dir := t.TempDir()
	s := newFileSink(t, dir)
	write(t, dir, "fragment-1.jsonl", "not json\n")
	err := s.Write(sinkOutputs(1, 0, 1))
	if err == nil || !strings.Contains(err.Error(), "last line is not a sink line") {
		t.Fatalf("Write = %v", err)
	}
	bad, err := NewSink(dir, func(line) ([]byte, error) { return []byte("{"), nil })
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := bad.Write(sinkOutputs(3, 0, 1)); err == nil || !strings.Contains(err.Error(), "invalid JSON") {
		t.Fatalf("Write = %v", err)
	}
}

// Long lines: the last line is found across several tail reads.
func TestFileSinkLongLines(t *testing.T) {
	dir := t.TempDir()
	s := newFileSink(t, dir)
	out := sinkOutputs(0, 0, 3)
	for i := range out {
		out[i].Value.Text = strings.Repeat("x", 10_000+i)
	}
	if err := s.Write(out); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := newFileSink(t, dir)
	if err := s2.Write(append(out, sinkOutputs(0, 3, 4)...)); err != nil {
		t.Fatal(err)
	}
	if ls := readSink(t, s2.Path(0)); len(ls) != 4 {
		t.Fatalf("%d lines, want 4", len(ls))
	}
}
