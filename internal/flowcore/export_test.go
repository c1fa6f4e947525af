package flowcore

// EncodeBatchV1 encodes b as a node of the version before sends it: every
// event whole, its key's bytes included.
func (p *Plan) EncodeBatchV1(dst []byte, b *Batch) ([]byte, error) { return p.encodeBatch(dst, b, 1) }

// EncodeBatchV2 encodes b as a node of version 2 sends it: the key's bytes
// spliced out of each event that holds them, at their position.
func (p *Plan) EncodeBatchV2(dst []byte, b *Batch) ([]byte, error) { return p.encodeBatch(dst, b, 2) }

// BatchEvents prints the events of b as fragment fr describes them.
func BatchEvents(fr *Fragment, b *Batch) []string {
	var out []string
	for _, pl := range b.parts {
		for i := range pl.len() {
			_, v := pl.describe(fr, i)
			out = append(out, v)
		}
	}
	return out
}

// SinkChunk is the most outputs a sink's buffer holds before a write.
const SinkChunk = sinkChunk

// AheadParts is the number of b's parts whose records were encoded as
// they were routed (Reader.EncodeAhead), all of them.
func (b *Batch) AheadParts() int {
	n := 0
	for _, pl := range b.parts {
		if r := pl.(interface{ ahead() *wireRun }).ahead(); r != nil && r.ok && r.e.n == pl.len() {
			n++
		}
	}
	return n
}

// CorruptAhead cuts the bytes of b's parts whose records are kept only
// as the run encoded ahead (bare) to half, and returns how many it cut.
func (b *Batch) CorruptAhead() int {
	n := 0
	for _, pl := range b.parts {
		r := pl.(interface{ ahead() *wireRun }).ahead()
		if r != nil && r.bare {
			r.buf = r.buf[:len(r.buf)/2]
			n++
		}
	}
	return n
}
