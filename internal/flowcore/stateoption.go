package flowcore

import (
	"reflect"
	"time"
)

// StateOption configures a stateful operator.
type StateOption struct {
	codec   any
	ttl     time.Duration
	ordered bool
}

// WithStateTTL expires a key's state once the watermark passes its last
// event's time by d, so that per-key state (one per subscriber, say) does
// not grow forever. It needs event time. Process, Reduce, Aggregate and
// Count support it; a table's expired key leaves its view.
func WithStateTTL(d time.Duration) StateOption { return StateOption{ttl: d} }

// stateTTL reads the TTL option for operator op.
func stateTTL(f *Flow, op string, stage int, opts []StateOption) int64 {
	var ttl time.Duration
	for _, o := range opts {
		ttl = max(ttl, o.ttl)
		if o.ttl < 0 {
			f.errorf("%s: negative state TTL %v", op, o.ttl)
		}
		f.checkSpan(op+": state TTL", o.ttl)
	}
	switch {
	case ttl == 0:
	case f.sources[f.stages[stage].source].et == nil:
		f.errorf("%s: WithStateTTL needs a source with event time (flows.WithEventTime)", op)
	}
	return int64(ttl)
}

// WithStateCodec sets the codec of the operator's state type, used by
// checkpoints. Its type must be the operator's state type: a codec of
// another type fails the flow's Validate.
func WithStateCodec[S any](c Codec[S]) StateOption { return StateOption{codec: c} }

// givenCodec is the state codec opts give, or nil.
func givenCodec(opts []StateOption) any {
	for _, o := range opts {
		if o.codec != nil {
			return o.codec
		}
	}
	return nil
}

func stateCodec[S any](f *Flow, op string, opts []StateOption) Codec[S] {
	for _, o := range opts {
		if o.codec != nil {
			c, ok := o.codec.(Codec[S])
			if !ok {
				f.errorf("%s: state codec %T is not a Codec[%s]", op, o.codec, reflect.TypeFor[S]())
			}
			return c
		}
	}
	c, err := DefaultCodec[S]()
	if err != nil {
		f.errorf("%s: missing codec for state: %v; pass WithStateCodec", op, err)
	}
	return c
}
