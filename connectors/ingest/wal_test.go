package ingest

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// A WAL write or sync that fails does not stop the process: the append
// fails with ErrBroken, every later one too, and the handler answers 503
// with Retry-After; what was acknowledged before is there after a
// restart.
func TestWALFailureIs503(t *testing.T) {
	mem := vfs.NewMem()
	var broken atomic.Bool
	fs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if !broken.Load() || !strings.HasSuffix(op.Path, ".log") {
			return nil
		}
		switch op.Kind {
		case errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
			return errorfs.ErrInjected
		}
		return nil
	}))
	l, err := Open("log", Options{FS: fs, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	s := newStream(t, l, Config[event]{Partitions: 1})
	ctx := context.Background()
	if _, err := s.Append(ctx, "k1", line(1), line(2)); err != nil {
		t.Fatal(err)
	}
	broken.Store(true)
	if _, err := s.Append(ctx, "k2", line(3)); !errors.Is(err, ErrBroken) {
		t.Fatalf("append with the WAL failing: %v, want ErrBroken", err)
	}
	req := httptest.NewRequest(http.MethodPost, "/v1/streams/events/events", bytes.NewReader(append(line(4), '\n')))
	req.Header.Set("Content-Type", "application/x-ndjson")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), `"error"`) {
		t.Fatalf("push with a broken log: %d %v %s", w.Code, w.Header(), w.Body)
	}
	if got := s.End(0); got != 2 {
		t.Fatalf("partition ends at %d after the failure, want 2", got)
	}
	l.Close() // an error: the WAL cannot be closed cleanly
	broken.Store(false)
	l = openLog(t, mem, Options{})
	s = newStream(t, l, Config[event]{Partitions: 1})
	if got := s.End(0); got != 2 {
		t.Fatalf("after a restart the partition ends at %d, want 2", got)
	}
	if res, err := s.Append(ctx, "k1", line(1), line(2)); err != nil || !res.Replayed {
		t.Fatalf("k1 after a restart: %+v %v", res, err)
	}
}
