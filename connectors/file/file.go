// Package file reads JSON-lines files, one file per partition, and writes
// outputs as JSON lines, one file per fragment.
//
// The offset of a record is the byte offset of its line in the file, so a
// partition is replayed from any offset with one seek. A line that does not
// decode is not an error of the source: it is returned as a bad record
// (with the file and offset) for the engine to count, log and dead-letter,
// and reading goes on.
//
// Files are read to their end; with Follow, the reader waits at the end for
// more lines (like tail -f) instead of reporting io.EOF, and a last line
// without a newline is taken as incomplete until its newline arrives.
//
// Sink writes outputs as JSON lines, one file per fragment, exactly once
// with flows.OnCheckpoint: every Write is appended and fsynced, and after
// a crash the file's last complete line names the last output written, so
// the redelivery of outputs the file already holds is skipped (see
// Sink.Write).
package file

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/tessera-streams/tessera/flows"
)

// MaxLine is the longest line accepted; longer ones are bad records.
const MaxLine = 1 << 20

// Source reads files matched by a glob, sorted by name: partition i is the
// i-th file. Every match must be a regular file: a glob that matches a
// directory is an error of New, not a partition that fails later.
type Source[T any] struct {
	files  []string
	decode func([]byte) (T, error)
	follow bool
}

// Option configures a Source.
type Option func(*options)

type options struct{ follow bool }

// Follow makes readers wait at the end of a file for more lines.
func Follow() Option { return func(o *options) { o.follow = true } }

// New returns a source over the files matching glob. decode turns a line
// (without its newline) into an event; nil decodes JSON into T.
func New[T any](glob string, decode func([]byte) (T, error), opts ...Option) (*Source[T], error) {
	files, err := filepath.Glob(glob)
	if err != nil {
		return nil, fmt.Errorf("file: glob %q: %w", glob, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("file: no file matches %q", glob)
	}
	for _, name := range files {
		fi, err := os.Stat(name)
		if err != nil {
			return nil, fmt.Errorf("file: %w", err)
		}
		if err := regular(name, fi); err != nil {
			return nil, fmt.Errorf("file: glob %q: %w", glob, err)
		}
	}
	sort.Strings(files)
	if decode == nil {
		decode = DecodeJSON[T]
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return &Source[T]{files: files, decode: decode, follow: o.follow}, nil
}

// regular refuses what cannot be a partition: a directory (a glob such as
// dir/* that also matches a subdirectory), a pipe or a device, none of
// which can be read again from an offset.
func regular(name string, fi os.FileInfo) error {
	switch {
	case fi.IsDir():
		return fmt.Errorf("%s is a directory, not a file: each partition is one file (narrow the glob)", name)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file (%v): a partition must be a file that can be read again from an offset", name, fi.Mode().Type())
	}
	return nil
}

// DecodeJSON decodes one JSON value, and rejects trailing data.
// (json.Decoder.More, used before, reads a closing bracket after the value
// as the end of a list and took `{"a":1}}` whole.)
func DecodeJSON[T any](line []byte) (T, error) {
	var v T
	err := json.Unmarshal(line, &v)
	return v, err
}

// Files lists the files, one per partition.
func (s *Source[T]) Files() []string { return s.files }

// Partitions implements flows.Source.
func (s *Source[T]) Partitions() int { return len(s.files) }

// Open implements flows.Source.
func (s *Source[T]) Open(p int, from int64) (flows.PartitionReader[T], error) {
	if p < 0 || p >= len(s.files) {
		return nil, fmt.Errorf("file: no partition %d", p)
	}
	f, err := os.Open(s.files[p])
	if err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = regular(s.files[p], fi)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("file: partition %d: %w", p, err)
	}
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("file: seek %s to %d: %w", s.files[p], from, err)
	}
	return &reader[T]{s: s, f: f, name: s.files[p], br: bufio.NewReaderSize(f, 64<<10), pos: from}, nil
}

type reader[T any] struct {
	s       *Source[T]
	f       *os.File
	name    string
	br      *bufio.Reader
	pos     int64  // offset of the start of the current line
	lineLen int64  // bytes of the current line consumed so far
	partial []byte // the current line's bytes consumed so far
	long    bool   // the current line exceeded MaxLine
}

func (r *reader[T]) Read(ctx context.Context, b *flows.ReadBatch[T], max int) error {
	defer func() { b.End = r.pos }()
	for len(b.Events) < max && len(b.Bad) < max {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		chunk, err := r.br.ReadSlice('\n')
		r.lineLen += int64(len(chunk))
		if errors.Is(err, bufio.ErrBufferFull) {
			if r.lineLen > MaxLine {
				r.long = true
				r.partial = r.partial[:0]
			} else {
				r.partial = append(r.partial, chunk...)
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("file %s at %d: %w", r.name, r.pos, err)
		}
		if err != nil && (r.s.follow || r.lineLen == 0) {
			// At the end: keep an incomplete line for later, or stop.
			if !r.long {
				r.partial = append(r.partial, chunk...)
			}
			if r.s.follow {
				return nil
			}
			return io.EOF
		}
		line := chunk
		if len(r.partial) > 0 {
			line = append(r.partial, chunk...)
		}
		if r.lineLen > MaxLine+2 { // allow for "\r\n"
			r.long = true
		}
		start := r.pos
		r.pos += r.lineLen
		r.lineLen = 0
		r.partial = r.partial[:0]
		r.record(b, start, bytes.TrimRight(line, "\r\n"))
		if err != nil { // io.EOF after a last line without newline
			return io.EOF
		}
	}
	return nil
}

func (r *reader[T]) record(b *flows.ReadBatch[T], off int64, line []byte) {
	if r.long {
		r.long = false
		b.Bad = append(b.Bad, flows.BadRecord{Offset: off, Where: r.name, Err: fmt.Errorf("line longer than %d bytes", MaxLine)})
		return
	}
	if len(bytes.TrimSpace(line)) == 0 {
		return // blank lines carry nothing
	}
	v, err := r.s.decode(line)
	if err != nil {
		b.Bad = append(b.Bad, flows.BadRecord{Offset: off, Where: r.name, Raw: bytes.Clone(line), Err: err})
		return
	}
	b.Events = append(b.Events, v)
	b.Offsets = append(b.Offsets, off)
}

func (r *reader[T]) Close() error { return r.f.Close() }
