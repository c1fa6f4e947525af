package flowcore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"

	"github.com/tessera-streams/tessera/splice"
)

// valueCodec is a Codec of some type, seen through any.
type valueCodec struct {
	enc func([]byte, any) ([]byte, error)
	dec func([]byte) (any, error)
}

func anyCodec[V any](c Codec[V]) valueCodec {
	if c == nil {
		return valueCodec{}
	}
	return valueCodec{
		enc: func(b []byte, v any) ([]byte, error) {
			x, ok := v.(V)
			if !ok {
				return nil, fmt.Errorf("value of type %T", v)
			}
			return c.Append(b, x)
		},
		dec: func(b []byte) (any, error) { return c.Decode(b) },
	}
}

func (p *Plan) viewDef(view string) (*viewDef, error) {
	for i := range p.f.views {
		if p.f.views[i].spec.Name == view {
			return &p.f.views[i], nil
		}
	}
	return nil, fmt.Errorf("%w %q", splice.ErrUnknownView, view)
}

// answerVersion is the version of the answers of view v: 2 for windowed
// keyed views, whose windows carry entries; 1, which nodes built before
// them read, for the others.
func answerVersion(v *viewDef) byte {
	if v.spec.Kind == splice.WindowedKeyed {
		return 2
	}
	return 1
}

// answerHead is an encoded answer's JSON head: its freshness and, for
// splice.OpChanges, the fragment's mark. The mark's hidden keys that are
// not valid UTF-8 go in HiddenBytes (base64 in JSON), which keeps their
// bytes: a JSON string would turn them into U+FFFD, and a watch would
// miss that they left the view.
type answerHead struct {
	splice.Freshness
	Changes     *splice.ChangeMark `json:"changes,omitempty"`
	HiddenBytes [][]byte           `json:"hidden_bytes,omitempty"`
}

// newAnswerHead is a's head, the hidden keys of its mark split by
// whether they are valid UTF-8.
func newAnswerHead(a splice.Answer) answerHead {
	h := answerHead{Freshness: a.Freshness, Changes: a.Changes}
	if c := a.Changes; c != nil && slices.ContainsFunc(c.Hidden, func(k string) bool { return !utf8.ValidString(k) }) {
		cc := *c
		cc.Hidden = nil
		for _, k := range c.Hidden {
			if utf8.ValidString(k) {
				cc.Hidden = append(cc.Hidden, k)
			} else {
				h.HiddenBytes = append(h.HiddenBytes, []byte(k))
			}
		}
		h.Changes = &cc
	}
	return h
}

// EncodeAnswer encodes a fragment's answer to a request on view, to cross
// nodes:
//
//	version byte (1, or 2 for windowed keyed views); freshness (uvarint length + JSON); horizon varint
//	partial: byte 0 (none) or 1 + uvarint length + the partial's codec
//	entries uvarint, each: key, value (uvarint length + bytes), score (8 bytes)
//	windows uvarint, each: start, end varint, then
//	  version 1: partial (uvarint length + bytes)
//	  version 2: partial as above (byte 0 or 1 + ...), keys uvarint, entries as above
func (p *Plan) EncodeAnswer(view string, a splice.Answer) ([]byte, error) {
	v, err := p.viewDef(view)
	if err != nil {
		return nil, err
	}
	// A changes answer's mark travels in the freshness's JSON (older
	// decoders ignore the field).
	fr, err := json.Marshal(newAnswerHead(a))
	if err != nil {
		return nil, err
	}
	version := answerVersion(v)
	b := []byte{version}
	b = appendBytes(b, fr)
	b = binary.AppendVarint(b, a.Horizon)
	withLen := func(b []byte, c valueCodec, x any) ([]byte, error) {
		if c.enc == nil {
			return nil, fmt.Errorf("view %q: no codec to send its answers", view)
		}
		mark := len(b)
		b = append(b, 0, 0, 0, 0, 0)
		b, err := c.enc(b, x)
		if err != nil {
			return nil, err
		}
		return putLength(b, mark), nil
	}
	partial := func(b []byte, x any) ([]byte, error) {
		if x == nil {
			return append(b, 0), nil
		}
		return withLen(append(b, 1), v.parts, x)
	}
	entries := func(b []byte, es []splice.Entry) ([]byte, error) {
		b = binary.AppendUvarint(b, uint64(len(es)))
		for _, e := range es {
			b = appendBytes(b, []byte(e.Key))
			if b, err = withLen(b, v.vals, e.Value); err != nil {
				return nil, err
			}
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(e.Score))
		}
		return b, nil
	}
	if b, err = partial(b, a.Partial); err != nil {
		return nil, err
	}
	if b, err = entries(b, a.Entries); err != nil {
		return nil, err
	}
	b = binary.AppendUvarint(b, uint64(len(a.Windows)))
	for _, w := range a.Windows {
		b = binary.AppendVarint(b, w.Start)
		b = binary.AppendVarint(b, w.End)
		if version == 1 {
			if w.Keys != 0 || len(w.Entries) > 0 {
				return nil, fmt.Errorf("view %q: window entries in an answer of a view without them", view)
			}
			if b, err = withLen(b, v.parts, w.Partial); err != nil {
				return nil, err
			}
			continue
		}
		if b, err = partial(b, w.Partial); err != nil {
			return nil, err
		}
		b = binary.AppendUvarint(b, uint64(w.Keys))
		if b, err = entries(b, w.Entries); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func appendBytes(b, x []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(x)))
	return append(b, x...)
}

// DecodeAnswer decodes what EncodeAnswer encoded for view.
func (p *Plan) DecodeAnswer(view string, data []byte) (splice.Answer, error) {
	var a splice.Answer
	v, err := p.viewDef(view)
	if err != nil {
		return a, err
	}
	version := answerVersion(v)
	if len(data) == 0 || data[0] != version {
		if len(data) > 0 && (data[0] == 1 || data[0] == 2) {
			return a, fmt.Errorf("view %q: answer of version %d, want %d (a node of another build?)", view, data[0], version)
		}
		return a, errors.New("malformed answer: unknown version")
	}
	r := &batchReader{b: data[1:], kind: "answer"}
	if fr := r.bytes("freshness"); r.err == nil {
		var h answerHead
		if err := json.Unmarshal(fr, &h); err != nil {
			return a, fmt.Errorf("malformed answer: freshness: %w", err)
		}
		a.Freshness, a.Changes = h.Freshness, h.Changes
		if len(h.HiddenBytes) > 0 {
			if a.Changes == nil {
				return a, errors.New("malformed answer: hidden keys without a mark")
			}
			for _, k := range h.HiddenBytes {
				a.Changes.Hidden = append(a.Changes.Hidden, string(k))
			}
		}
	}
	a.Horizon = r.varint("horizon")
	value := func(c valueCodec, what string) any {
		raw := r.bytes(what)
		if r.err != nil {
			return nil
		}
		if c.dec == nil {
			r.fail("no codec for " + what)
			return nil
		}
		x, err := c.dec(raw)
		if err != nil {
			r.fail(fmt.Sprintf("%s: %v", what, err))
		}
		return x
	}
	partial := func(what string) any {
		if r.err != nil || len(r.b) == 0 {
			r.fail(what)
			return nil
		}
		flag := r.b[0]
		r.b = r.b[1:]
		switch flag {
		case 0:
			return nil
		case 1:
			return value(v.parts, what)
		}
		r.fail(what)
		return nil
	}
	entries := func() []splice.Entry {
		n := r.uvarint("entries")
		if n > uint64(len(r.b)) {
			r.fail("entries")
		}
		var es []splice.Entry
		for i := uint64(0); i < n && r.err == nil; i++ {
			key := string(r.bytes("key"))
			val := value(v.vals, "value")
			if r.err != nil || len(r.b) < 8 {
				r.fail("score")
				break
			}
			score := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
			r.b = r.b[8:]
			if v.parseKey == nil {
				r.fail("entries of a view without keys")
				break
			}
			sort, err := v.parseKey(key)
			if err != nil {
				r.fail(fmt.Sprintf("key %q: %v", key, err))
				break
			}
			es = append(es, splice.Entry{Key: key, Value: val, Score: score, Sort: sort})
		}
		return es
	}
	a.Partial = partial("partial")
	a.Entries = entries()
	n := r.uvarint("windows")
	if n > uint64(len(r.b)) {
		r.fail("windows")
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		w := splice.WindowPartial{Start: r.varint("start"), End: r.varint("end")}
		if version == 1 {
			w.Partial = value(v.parts, "window partial")
		} else {
			w.Partial = partial("window partial")
			w.Keys = int64(r.uvarint("window keys"))
			w.Entries = entries()
		}
		a.Windows = append(a.Windows, w)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return splice.Answer{}, fmt.Errorf("view %q: %w", view, r.err)
	}
	return a, nil
}
