// Package shard maps keys to fragments and fragments to members.
//
// Everything here is pure: no goroutines, no clock, no I/O. The hash is
// stable across processes, versions and platforms (xxHash64 of the key's
// bytes), because fragment numbers are persisted in checkpoints and computed
// independently by every node.
//
//   - Fragment(h, g) maps a key hash to one of g fragments (hash mod g).
//   - Place ranks members for a fragment by rendezvous (highest random weight)
//     hashing; the first is the owner, the next R-1 are standbys.
//   - Assign builds the whole table and Diff lists what moves between tables.
//   - Spec.LayOut places a flow: fragments, their standbys, source
//     partitions' readers and alerts; with Groups, fragments ≡ mod Groups
//     together and a keyed source's partitions beside their fragments.
//   - Majority decides whether a side of a split cluster may own fragments:
//     more than half of the last agreed membership, or exactly half with its
//     lowest-ordered member (see its doc for why a side without a majority
//     stops rather than goes on).
//   - Follower decides, from what a node sees over time, when it places,
//     fences and resumes: the rule of cluster.Node, which the simulation
//     (package sim) runs too. Time is an input: no clock of its own.
//
// Rendezvous hashing gives minimal movement by construction: when a member
// joins, only fragments for which it now ranks in the top R change; when one
// leaves, only the fragments it held change.
package shard
