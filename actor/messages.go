package actor

import (
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
)

// The messages of the fragment and reader actors within a node.
type (
	pollMsg  struct{}
	batchMsg struct {
		b      *flowcore.Batch
		reader *pa.PID
	}
	ackMsg struct {
		fragment int
		start    int64 // the batch's PrevEnd (recovery.From.Start)
	}
	rewindMsg struct {
		to       int64
		fragment int
	}
	tickMsg struct{ now time.Time }
	// ckptReq asks for a checkpoint; final (a stop, a hand-off): one
	// that cannot be taken yet is not waited for.
	ckptReq struct{ final bool }
	// ckptOK answers it; lineage is the epoch a hand-off of the fragment
	// carries at least (recovery.Machine.HandoffEpoch): set when a final
	// checkpoint could not be taken.
	ckptOK struct{ lineage uint64 }
	// startMsg starts a fragment once the layout is in place (Machine.Start);
	// replay: it started after a placement change (Machine.Replay); placed:
	// a placement change gained it (not the engine's start), and its
	// standby gets its copy at once (toNewStandby).
	startMsg struct{ replay, placed bool }
	stopMsg  struct{}
	ckptDone struct {
		epoch   uint64
		offsets map[recovery.PartitionID]int64
		time    int64
		bytes   int
		err     error
		// copying: the checkpoint went to a standby, whose Copied
		// releases its outputs; else it has none and durable here is all
		// there is.
		copying bool
	}
)
