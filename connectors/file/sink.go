package file

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/tessera-streams/tessera/flows"
)

// Sink writes outputs as JSON lines, one file per fragment in a directory,
// exactly once when used with flows.OnCheckpoint (see Sink.Write). A line
// is {"id":"<output id>","value":<the encoded value>}. It is safe for
// concurrent use by different fragments; Close it after the engine has
// stopped.
//
// Crash safety is that of the file system under a process crash: every
// Write is fsynced before it returns, and a line torn by a crash is cut
// off when the file is opened again. After a machine crash, a file system
// that kept a later write but not an earlier one can leave a line of
// garbage before the last: opening then fails rather than guess.
type Sink[T any] struct {
	dir    string
	encode func(T) ([]byte, error)
	mu     sync.Mutex
	frags  map[int]*fragFile
	closed bool
}

type fragFile struct {
	mu   sync.Mutex
	f    *os.File // nil until opened, and after a failed Write
	skip string   // the id of the last line when opened; "" for none
	used bool     // a Write ran since the file was opened
	shut bool     // the sink is closed: never open again
}

// Line is one line of a sink's file.
type Line struct {
	ID    string          `json:"id"`
	Value json.RawMessage `json:"value"`
}

// NewSink returns a sink writing into dir, created if missing. encode
// makes an output's value, which must be JSON (written compacted, on the
// output's line); nil encodes with encoding/json.
func NewSink[T any](dir string, encode func(T) ([]byte, error)) (*Sink[T], error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	s := &Sink[T]{dir: dir, encode: encode, frags: map[int]*fragFile{}}
	if s.encode == nil {
		s.encode = func(v T) ([]byte, error) { return json.Marshal(v) }
	}
	return s, nil
}

// Path is the file of fragment frag's outputs.
func (s *Sink[T]) Path(frag int) string {
	return filepath.Join(s.dir, fmt.Sprintf("fragment-%d.jsonl", frag))
}

// Write appends out, the outputs of one fragment, to the fragment's file
// and fsyncs it. The first Write after the file is opened (the sink's
// first for the fragment, or the first after a failed one or after
// Restored) skips its outputs up to and including the one whose id is the
// file's last line: they were written by a Write whose success no
// checkpoint recorded before a crash or a restore, and flows.OnCheckpoint
// delivers them again in the same order.
func (s *Sink[T]) Write(out []flows.Output[T]) error {
	if len(out) == 0 {
		return nil
	}
	frag := out[0].ID.Fragment
	for _, o := range out[1:] {
		if o.ID.Fragment != frag {
			return fmt.Errorf("file sink: one Write holds outputs of fragments %d and %d", frag, o.ID.Fragment)
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("file sink: closed")
	}
	ff := s.frags[frag]
	if ff == nil {
		ff = &fragFile{}
		s.frags[frag] = ff
	}
	s.mu.Unlock()

	ff.mu.Lock()
	defer ff.mu.Unlock()
	if ff.shut {
		return errors.New("file sink: closed")
	}
	if err := s.write(ff, frag, out); err != nil {
		if ff.f != nil {
			ff.f.Close()
			ff.f = nil
		}
		return fmt.Errorf("file sink: fragment %d: %w", frag, err)
	}
	return nil
}

func (s *Sink[T]) write(ff *fragFile, frag int, out []flows.Output[T]) error {
	if ff.f == nil {
		f, last, err := openAppend(s.Path(frag))
		if err != nil {
			return err
		}
		ff.f, ff.skip, ff.used = f, last, false
	}
	if !ff.used {
		ff.used = true
		for i, o := range out {
			if ff.skip != "" && o.ID.String() == ff.skip {
				out = out[i+1:]
				break
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	var buf bytes.Buffer
	for _, o := range out {
		v, err := s.encode(o.Value)
		if err != nil {
			return fmt.Errorf("encode output %s: %w", o.ID, err)
		}
		buf.WriteString(`{"id":`)
		buf.Write(appendQuoted(buf.AvailableBuffer(), o.ID.String()))
		buf.WriteString(`,"value":`)
		// Compacted: a value encoded over several lines (indented) would
		// break the file's one line per output.
		if err := json.Compact(&buf, v); err != nil {
			return fmt.Errorf("output %s encodes to invalid JSON %q: %w", o.ID, v, err)
		}
		buf.WriteString("}\n")
	}
	if _, err := ff.f.Write(buf.Bytes()); err != nil {
		return err
	}
	return ff.f.Sync()
}

// Restored closes fragment frag's file (flows.RestoredSink): the
// fragment restored a checkpoint and delivers its pending outputs again,
// some of which the file may hold. The next Write opens the file again and
// skips what it holds, as after a crash.
func (s *Sink[T]) Restored(frag int) {
	s.mu.Lock()
	ff := s.frags[frag]
	s.mu.Unlock()
	if ff == nil {
		return
	}
	ff.mu.Lock()
	defer ff.mu.Unlock()
	if ff.f != nil {
		ff.f.Close()
		ff.f = nil
	}
}

var _ flows.RestoredSink = (*Sink[int])(nil)

// appendQuoted appends s as a JSON string (ids are printable ASCII, keys
// aside, which json.Marshal escapes).
func appendQuoted(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

// openAppend opens (or creates) name for appending: it cuts a torn last
// line off, and returns the id of the last complete line.
func openAppend(name string) (*os.File, string, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, "", err
	}
	last, end, err := lastLine(f)
	if err == nil {
		err = f.Truncate(end)
	}
	if err == nil {
		_, err = f.Seek(end, io.SeekStart)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syncDir(filepath.Dir(name)) // a new file's entry
	}
	if err != nil {
		f.Close()
		return nil, "", fmt.Errorf("open %s: %w", name, err)
	}
	if last == nil {
		return f, "", nil
	}
	var l Line
	if err := json.Unmarshal(last, &l); err != nil || l.ID == "" {
		f.Close()
		return nil, "", fmt.Errorf("open %s: its last line is not a sink line (%q): %w", name, last, errors.Join(err, errors.New("no id")))
	}
	return f, l.ID, nil
}

// lastLine finds the last complete line of f (without its newline; nil if
// there is none) and the size of f up to its end.
func lastLine(f *os.File) ([]byte, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := fi.Size()
	// Read growing tails until one holds two newlines, or the whole file.
	for tail := int64(4096); ; tail *= 4 {
		from := max(0, size-tail)
		buf := make([]byte, size-from)
		if _, err := f.ReadAt(buf, from); err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, err
		}
		nl := bytes.LastIndexByte(buf, '\n')
		if nl < 0 && from == 0 {
			return nil, 0, nil // no complete line
		}
		if nl >= 0 {
			start := bytes.LastIndexByte(buf[:nl], '\n')
			if start >= 0 || from == 0 {
				return buf[start+1 : nl], from + int64(nl) + 1, nil
			}
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Close closes the files. Safe to call twice.
func (s *Sink[T]) Close() error {
	s.mu.Lock()
	s.closed = true
	frags := s.frags
	s.frags = map[int]*fragFile{}
	s.mu.Unlock()
	var errs []error
	for _, ff := range frags {
		ff.mu.Lock()
		if ff.f != nil {
			errs = append(errs, ff.f.Close())
			ff.f = nil
		}
		ff.shut = true
		ff.mu.Unlock()
	}
	return errors.Join(errs...)
}
