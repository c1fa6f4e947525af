// Package recovery holds the rules of exactly-once state: the offset vector
// a fragment keeps per source partition, and what a batch means against it.
//
// The rules are pure (no I/O, no clock): the fragment actor asks Admit and
// carries out the verdict. The checkpoint store that persists vectors with
// state comes with the checkpoint work; see DESIGN.md.
//
// AlertLog holds, the same way, the rules of a flow's alert log in a
// cluster: one node evaluates the alerts, prepares each step with its
// standby before it writes and announces it, and every node keeps a copy;
// a new owner catches up from every node before it evaluates, so that no
// crossing is raised twice or skipped across a failover.
package recovery
