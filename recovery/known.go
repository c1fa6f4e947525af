package recovery

import (
	"github.com/tessera-streams/tessera/shard"
)

// Known is what a fragment's owner knows of who durably knows of its
// checkpoints: before it releases a checkpoint's outputs (Machine.Copied)
// a majority of its placement's members (shard.Majority, the rule that
// decides which side of a partition owns fragments) must know of the
// checkpoint, not only the owner and its standby that hold it.
//
// Settled alone could not protect a checkpoint settled while the owner
// and its standby were cut off together from the others: they go on
// until their lease runs out, and what they settle meanwhile no other
// member hears of. The majority side then took the fragment over from an
// older copy, or none, and released other values under the ids of
// outputs the sinks had (sim visits seed 8311: a partition left the owner
// and its standby, two of six, on the minority side for the 1.4 s before
// they fenced; they settled two checkpoints in it). Any side that later
// owns the fragment is a majority, which holds a member that knows: the
// member's answer to the side's gather (NoHandoff.settled,
// CheckpointChunk.settled) makes the fragment wait for the copy instead
// (Settled.Lacks). Where the owner and its standby are a majority
// themselves (any two of three members) nothing waits for the others.
//
// A member knows of a checkpoint when it holds a copy of it or of a
// newer one (the owner, the standby that confirmed it) or noted it in
// its store, synced (Store.NoteSettled), and said so. What it knows only
// grows, so the order of the answers does not matter.
//
// AlertLog counts the members that hold its pending step prepared the
// same way, by the step's version.
type Known map[string]uint64

// Note records that member durably knows of the fragment's checkpoint
// epoch.
func (k Known) Note(member string, epoch uint64) {
	k[member] = max(k[member], epoch)
}

// Enough reports whether a majority of members knows of checkpoint epoch
// (or of a newer one).
func (k Known) Enough(members []string, epoch uint64) bool {
	var by []string
	for _, m := range members {
		if k[m] >= epoch {
			by = append(by, m)
		}
	}
	return shard.Majority(members, by)
}

// Lacking are the members that do not know of checkpoint epoch yet: the
// owner asks them.
func (k Known) Lacking(members []string, epoch uint64) []string {
	var out []string
	for _, m := range members {
		if k[m] < epoch {
			out = append(out, m)
		}
	}
	return out
}
