package file

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tessera-streams/tessera/flows"
)

type line struct {
	Text string `json:"text"`
}

func write(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func drain(t *testing.T, pr flows.PartitionReader[line], max int) (evs []line, offs []int64, bad []flows.BadRecord, end int64) {
	t.Helper()
	var b flows.ReadBatch[line]
	for {
		b.Reset()
		err := pr.Read(context.Background(), &b, max)
		evs, offs, bad = append(evs, b.Events...), append(offs, b.Offsets...), append(bad, b.Bad...)
		end = b.End
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadReplayAndBadLines(t *testing.T) {
	dir := t.TempDir()
	body := `{"text":"a b"}` + "\n" + `not json` + "\n\n" + `{"text":"c"}` + "\r\n" + `{"text":"d"} x` + "\n" + `{"text":"last"}`
	write(t, dir, "p0.jsonl", body)
	write(t, dir, "p1.jsonl", "")
	s, err := New[line](filepath.Join(dir, "*.jsonl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Partitions() != 2 {
		t.Fatalf("partitions = %d", s.Partitions())
	}
	pr, _ := s.Open(0, 0)
	defer pr.Close()
	evs, offs, bad, end := drain(t, pr, 2)
	var texts []string
	for _, e := range evs {
		texts = append(texts, e.Text)
	}
	if strings.Join(texts, ",") != "a b,c,last" {
		t.Fatalf("events = %v", texts)
	}
	if len(bad) != 2 || bad[0].Offset != 15 || bad[0].Where != filepath.Join(dir, "p0.jsonl") || string(bad[0].Raw) != "not json" {
		t.Fatalf("bad = %+v", bad)
	}
	if end != int64(len(body)) {
		t.Fatalf("end = %d, want %d", end, len(body))
	}
	// Replay from the offset of "c".
	pr2, _ := s.Open(0, offs[1])
	defer pr2.Close()
	evs2, offs2, _, _ := drain(t, pr2, 100)
	if len(evs2) != 2 || evs2[0].Text != "c" || offs2[0] != offs[1] {
		t.Fatalf("replay = %v at %v", evs2, offs2)
	}
	pr3, _ := s.Open(1, 0)
	defer pr3.Close()
	if evs, _, _, _ := drain(t, pr3, 10); len(evs) != 0 {
		t.Fatalf("empty file gave %v", evs)
	}
}

func TestFollowWaitsForNewline(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.jsonl")
	write(t, dir, "p.jsonl", `{"text":"a"}`+"\n"+`{"te`)
	s, _ := New[line](path, nil, Follow())
	pr, _ := s.Open(0, 0)
	defer pr.Close()
	var b flows.ReadBatch[line]
	if err := pr.Read(context.Background(), &b, 10); err != nil || len(b.Events) != 1 || b.End != 13 {
		t.Fatalf("first read: %v %v end %d", b.Events, err, b.End)
	}
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`xt":"b"}` + "\n")
	f.Close()
	b.Reset()
	if err := pr.Read(context.Background(), &b, 10); err != nil || len(b.Events) != 1 || b.Events[0].Text != "b" || b.Offsets[0] != 13 {
		t.Fatalf("second read: %v at %v, %v", b.Events, b.Offsets, err)
	}
}

func TestLongLine(t *testing.T) {
	dir := t.TempDir()
	body := `{"text":"` + strings.Repeat("x", MaxLine) + `"}` + "\n" + `{"text":"ok"}` + "\n"
	write(t, dir, "p.jsonl", body)
	s, _ := New[line](filepath.Join(dir, "p.jsonl"), nil)
	pr, _ := s.Open(0, 0)
	defer pr.Close()
	evs, offs, bad, _ := drain(t, pr, 10)
	if len(bad) != 1 || bad[0].Offset != 0 || len(evs) != 1 || evs[0].Text != "ok" || offs[0] != int64(MaxLine+12) {
		t.Fatalf("%d bad, %d events at %v", len(bad), len(evs), offs)
	}
}

func TestNoFiles(t *testing.T) {
	if _, err := New[line](filepath.Join(t.TempDir(), "*.jsonl"), nil); err == nil {
		t.Fatal("no error for a glob without files")
	}
}

func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(`{"text":"a"}`))
	f.Add([]byte(`{"text":1}`))
	f.Add([]byte(`{} {}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeJSON[line](b)
		if err == nil {
			if _, err := DecodeJSON[line]([]byte(`{"text":` + quote(v.Text) + `}`)); err != nil {
				t.Fatalf("re-decode: %v", err)
			}
		}
	})
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// A glob that matches a directory is refused by New with a message that
// says so; a file that became a directory is refused by Open.
func TestDirectoryIsNotAPartition(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.jsonl", `{"text":"a"}`+"\n")
	if err := os.Mkdir(filepath.Join(dir, "b.jsonl"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := New[line](filepath.Join(dir, "*.jsonl"), nil)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "b.jsonl")+" is a directory") {
		t.Fatalf("New = %v, want a directory error", err)
	}
	s, err := New[line](filepath.Join(dir, "a.jsonl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "a.jsonl"))
	if err := os.Mkdir(filepath.Join(dir, "a.jsonl"), 0o755); err != nil {
		t.Fatal(err)
	}
	if pr, err := s.Open(0, 0); err == nil || !strings.Contains(err.Error(), "is a directory") {
		if pr != nil {
			pr.Close()
		}
		t.Fatalf("Open = %v, want a directory error", err)
	}
}
