package file

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"github.com/tessera-streams/tessera/flows"
)

// Line is a line of a Sink's file: an output's id and value.
type Line[T any] struct {
	ID    string `json:"id"`
	Value T      `json:"value"`
}

// Sink appends outputs to a file as JSON lines (Line), synced after each
// write. With flows.OnCheckpoint it is exactly-once for a reader that
// keeps one line per id: a restored fragment delivers a checkpoint's
// outputs again, with the same ids. Write may be called by several
// fragments at once.
type Sink[T any] struct {
	mu sync.Mutex
	f  *os.File
}

// NewSink opens (creating, or appending to) the file name.
func NewSink[T any](name string) (*Sink[T], error) {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	return &Sink[T]{f: f}, nil
}

// Write implements flows.Sink.
func (s *Sink[T]) Write(out []flows.Output[T]) error {
	var buf []byte
	for _, o := range out {
		b, err := json.Marshal(Line[T]{ID: o.ID.String(), Value: o.Value})
		if err != nil {
			return fmt.Errorf("file sink: output %s: %w", o.ID, err)
		}
		buf = append(append(buf, b...), '\n')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.f.Write(buf); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	return s.f.Sync()
}

// Close closes the file.
func (s *Sink[T]) Close() error { return s.f.Close() }
