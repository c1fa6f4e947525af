// Package recovery holds the rules of exactly-once state: the offset vector
// a fragment keeps per source partition, and what a batch means against it.
//
// The rules are pure (no I/O, no clock): the fragment actor asks Admit and
// carries out the verdict. The checkpoint store that persists vectors with
// state comes with the checkpoint work; see DESIGN.md.
package recovery
