package ingest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Options.MaxBytes promises that a log full of events the flow has not
// committed refuses appends with ErrFull: Stream.Append is an append too.
func TestAppendToAFullLogIsErrFull(t *testing.T) {
	l := openLog(t, vfs.NewMem(), Options{MaxBytes: 1000})
	s := newStream(t, l, Config[event]{Partitions: 1})
	ctx := context.Background()
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = s.Append(ctx, "", line(i), line(i+1000), line(i+2000))
	}
	if !errors.Is(err, ErrFull) {
		t.Fatalf("appends went on to %d bytes held, none of them committed (MaxBytes 1000); last error %v, want ErrFull", l.Bytes(), err)
	}
	if l.Bytes() > 1000 {
		t.Fatalf("the log holds %d uncommitted bytes, over MaxBytes 1000", l.Bytes())
	}
}

// Concurrent pushes into a log with room for two of them: the log never
// holds more than MaxBytes of uncommitted events; the others are 503.
func TestConcurrentPushesStayWithinMaxBytes(t *testing.T) {
	l := openLog(t, vfs.NewMem(), Options{MaxBytes: 1500})
	s := newStream(t, l, Config[event]{Partitions: 2, MaxUnread: 1 << 30})
	body := strings.Repeat(`{"text":"aaaaaaaaaa"}`+"\n", 30) // 630 bytes of events
	var wg sync.WaitGroup
	codes := make([]int, 32)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = post(t, s, "application/x-ndjson", "", body).code
		}()
	}
	wg.Wait()
	ok := 0
	for _, c := range codes {
		switch c {
		case 200:
			ok++
		case 503:
		default:
			t.Fatalf("answers %v", codes)
		}
	}
	if l.Bytes() > 1500 {
		t.Fatalf("%d pushes of 630 bytes acknowledged: the log holds %d uncommitted bytes, over MaxBytes 1500", ok, l.Bytes())
	}
}
