package recovery

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"pgregory.net/rapid"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func load(t testing.TB, s *Store, frag int) (Manifest, map[string]string, bool, error) {
	t.Helper()
	got := map[string]string{}
	m, ok, err := s.Load("flow", frag, func(e Entry) error {
		got[fmt.Sprintf("%d/%s", e.Namespace, e.Key)] = string(e.Value)
		return nil
	})
	return m, got, ok, err
}

func put(ns uint16, k, v string) Entry { return Entry{Namespace: ns, Key: []byte(k), Value: []byte(v)} }

func TestIncrementalCheckpoints(t *testing.T) {
	s, err := Open("db", vfs.NewMem(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, ok, err := load(t, s, 3); ok || err != nil {
		t.Fatalf("empty store: ok=%v err=%v", ok, err)
	}
	off := map[PartitionID]int64{{0, 1}: 100}
	cp1 := &Checkpoint{Manifest: Manifest{Epoch: 1, Fragments: 8, Entries: 3, Offsets: off},
		Puts: []Entry{put(0, "a", "1"), put(0, "b", "2"), put(1, "t1", "")}}
	if _, err := s.Write("flow", 3, cp1); err != nil {
		t.Fatal(err)
	}
	cp2 := &Checkpoint{Manifest: Manifest{Epoch: 2, Fragments: 8, Entries: 3, Offsets: map[PartitionID]int64{{0, 1}: 200}},
		Reset: []uint16{1}, Puts: []Entry{put(0, "a", "10"), put(1, "t2", "")}, Deletes: []Entry{{Namespace: 0, Key: []byte("b")}, {Namespace: 0, Key: []byte("zz")}}}
	cp2.Puts = append(cp2.Puts, put(0, "c", "3"))
	if _, err := s.Write("flow", 3, cp2); err != nil {
		t.Fatal(err)
	}
	m, got, ok, err := load(t, s, 3)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	want := map[string]string{"0/a": "10", "0/c": "3", "1/t2": ""}
	if !reflect.DeepEqual(got, want) || m.Epoch != 2 || m.Offsets[PartitionID{0, 1}] != 200 {
		t.Fatalf("got %v %+v", got, m)
	}
	// Other fragments and flows are separate.
	if _, _, ok, _ := load(t, s, 2); ok {
		t.Fatal("fragment 2 has a checkpoint")
	}
	if s.BytesWritten() == 0 {
		t.Fatal("no bytes counted")
	}
}

// A checkpoint committed while a restore reads the one before it (the
// queued write of a fragment that was just stopped) must not give the
// older manifest with the newer entries: the replay from the older
// offsets would apply again what those entries hold.
func TestLoadReadsManifestAndEntriesOfOneCheckpoint(t *testing.T) {
	s, err := Open("db", vfs.NewMem(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := PartitionID{0, 0}
	cp1 := &Checkpoint{Manifest: Manifest{Epoch: 1, Fragments: 8, Entries: 1, Offsets: map[PartitionID]int64{p: 100}},
		Puts: []Entry{put(0, "", "100 events")}}
	if _, err := s.Write("flow", 3, cp1); err != nil {
		t.Fatal(err)
	}
	cp2 := &Checkpoint{Manifest: Manifest{Epoch: 2, Fragments: 8, Entries: 1, Offsets: map[PartitionID]int64{p: 200}},
		Puts: []Entry{put(0, "", "200 events")}}
	loadedManifest = func() {
		loadedManifest = nil
		if _, err := s.Write("flow", 3, cp2); err != nil {
			t.Error(err)
		}
	}
	defer func() { loadedManifest = nil }()
	m, got, ok, err := load(t, s, 3)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if m.Epoch != 1 || m.Offsets[p] != 100 || got["0/"] != "100 events" {
		t.Fatalf("restored the manifest of epoch %d (offset %d) with the state %q", m.Epoch, m.Offsets[p], got["0/"])
	}
	m, got, _, err = load(t, s, 3)
	if err != nil || m.Epoch != 2 || got["0/"] != "200 events" {
		t.Fatalf("after the write: epoch %d, state %q, err %v", m.Epoch, got["0/"], err)
	}
}

func TestManifestCountDetectsMissingEntries(t *testing.T) {
	s, _ := Open("db", vfs.NewMem(), quiet())
	defer s.Close()
	s.Write("flow", 0, &Checkpoint{Manifest: Manifest{Epoch: 1, Fragments: 1, Entries: 5}, Puts: []Entry{put(0, "a", "1")}})
	_, _, _, err := load(t, s, 0)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "1 entries stored, manifest of epoch 1 says 5") {
		t.Fatalf("err = %v", err)
	}
}

// A flipped byte anywhere in the stored data is reported as a corrupt
// checkpoint (by our checksums or pebble's), never served.
func TestFlippedByteIsDetected(t *testing.T) {
	for _, pos := range []int{0, 1, 2, 3} {
		t.Run(fmt.Sprint(pos), func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, nil, quiet())
			if err != nil {
				t.Fatal(err)
			}
			var puts []Entry
			for i := range 2000 {
				puts = append(puts, put(0, fmt.Sprintf("key-%05d", i), strings.Repeat("v", 50)))
			}
			if _, err := s.Write("flow", 0, &Checkpoint{Manifest: Manifest{Epoch: 1, Fragments: 1, Entries: 2000}, Puts: puts}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil { // flushes to an sstable
				t.Fatal(err)
			}
			ssts, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
			if len(ssts) == 0 {
				t.Fatal("no sstable written")
			}
			b, _ := os.ReadFile(ssts[0])
			i := len(b) * (pos + 1) / 10 // somewhere in the data blocks
			b[i] ^= 0x40
			os.WriteFile(ssts[0], b, 0o644)

			s, err = Open(dir, nil, quiet())
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("open: %v, want ErrCorrupt", err)
				}
				return
			}
			defer s.Close()
			_, _, _, err = load(t, s, 0)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "restore fragment 0") {
				t.Fatalf("load after a flipped byte at %d of %d: %v", i, len(b), err)
			}
		})
	}
}

// A crash at any moment leaves either the previous checkpoint or the new
// one, whole: never a mix.
func TestCheckpointIsAllOrNothing(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s, err := Open("db", fs, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const keys = 300
	cp := func(epoch int) *Checkpoint {
		c := &Checkpoint{Manifest: Manifest{Epoch: uint64(epoch), Fragments: 1, Entries: keys,
			Offsets: map[PartitionID]int64{{0, 0}: int64(epoch * 10)}}}
		for k := range keys {
			c.Puts = append(c.Puts, put(0, fmt.Sprintf("k%03d", k), fmt.Sprintf("epoch-%d", epoch)))
		}
		return c
	}
	if _, err := s.Write("flow", 0, cp(1)); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for epoch := 2; epoch < 40; epoch++ {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Write("flow", 0, cp(epoch)); err != nil {
				t.Error(err)
			}
		}()
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
		wg.Wait()
		c, err := Open("db", clone, quiet())
		if err != nil {
			t.Fatalf("reopen after crash: %v", err)
		}
		m, got, ok, err := load(t, c, 0)
		c.Close()
		if err != nil || !ok {
			t.Fatalf("epoch %d: ok=%v err=%v", epoch, ok, err)
		}
		if m.Epoch != uint64(epoch) && m.Epoch != uint64(epoch-1) {
			t.Fatalf("crash during epoch %d left epoch %d", epoch, m.Epoch)
		}
		for k, v := range got {
			if v != fmt.Sprintf("epoch-%d", m.Epoch) {
				t.Fatalf("manifest of epoch %d with entry %s = %s", m.Epoch, k, v)
			}
		}
		if m.Offsets[PartitionID{0, 0}] != int64(m.Epoch*10) {
			t.Fatalf("offsets %v for epoch %d", m.Offsets, m.Epoch)
		}
	}
}

// Checkpoints written unsynced (group commit) are each whole or absent
// after a crash before the sync, and all there after it.
func TestGroupCommitIsDurableAfterSync(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s, err := Open("db", fs, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const frags, keys = 8, 50
	cp := func(epoch, frag int) *Checkpoint {
		c := &Checkpoint{Manifest: Manifest{Epoch: uint64(epoch), Fragments: frags, Entries: keys,
			Offsets: map[PartitionID]int64{{0, 0}: int64(epoch*100 + frag)}}}
		for k := range keys {
			c.Puts = append(c.Puts, put(0, fmt.Sprintf("k%03d", k), fmt.Sprintf("%d/%d", epoch, frag)))
		}
		return c
	}
	rng := rand.New(rand.NewPCG(3, 4))
	check := func(fs *vfs.MemFS, round int, synced bool) {
		t.Helper()
		c, err := Open("db", fs, quiet())
		if err != nil {
			t.Fatalf("reopen after crash: %v", err)
		}
		defer c.Close()
		for f := range frags {
			m, got, ok, err := load(t, c, f)
			if err != nil {
				t.Fatalf("round %d, fragment %d: %v", round, f, err)
			}
			epoch := 0
			if ok {
				epoch = int(m.Epoch)
			}
			if epoch != round && (synced || epoch != round-1) {
				t.Fatalf("round %d (synced %v), fragment %d: checkpoint of epoch %d", round, synced, f, epoch)
			}
			if ok && (m.Offsets[PartitionID{0, 0}] != int64(epoch*100+f) || len(got) != keys) {
				t.Fatalf("fragment %d: epoch %d with offsets %v and %d entries", f, epoch, m.Offsets, len(got))
			}
			for k, v := range got {
				if v != fmt.Sprintf("%d/%d", epoch, f) {
					t.Fatalf("fragment %d, epoch %d: entry %s = %s", f, epoch, k, v)
				}
			}
		}
	}
	for round := 1; round <= 10; round++ {
		for f := range frags {
			if _, err := s.WriteUnsynced("flow", f, cp(round, f)); err != nil {
				t.Fatal(err)
			}
		}
		check(fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng}), round, false)
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		check(fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng}), round, true)
	}
}

func TestManifestRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := Manifest{
			Epoch:     rapid.Uint64().Draw(t, "epoch"),
			Fragments: rapid.IntRange(1, 1<<16).Draw(t, "frags"),
			Time:      rapid.Int64().Draw(t, "time"),
			Entries:   rapid.Int64Min(0).Draw(t, "entries"),
			Events:    rapid.Int64Min(0).Draw(t, "events"),
			Offsets:   map[PartitionID]int64{},
		}
		for range rapid.IntRange(0, 10).Draw(t, "n") {
			m.Offsets[PartitionID{rapid.IntRange(0, 5).Draw(t, "s"), rapid.IntRange(0, 100).Draw(t, "p")}] = rapid.Int64Min(0).Draw(t, "o")
		}
		got, err := DecodeManifest(EncodeManifest(m))
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip %+v -> %+v, %v", m, got, err)
		}
	})
}

func FuzzDecodeManifest(f *testing.F) {
	f.Add(EncodeManifest(Manifest{Epoch: 3, Fragments: 64, Entries: 10, Offsets: map[PartitionID]int64{{0, 1}: 5}}))
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not marked corrupt: %v", err)
			}
			return
		}
		if !bytes.Equal(EncodeManifest(m), b) {
			t.Fatalf("accepted a non-canonical manifest %x", b)
		}
	})
}

// A checkpoint crosses nodes intact; a full one replaces a standby's copy.
func TestCheckpointEncodingAndFullCopy(t *testing.T) {
	src, err := Open("src", vfs.NewMem(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := Open("dst", vfs.NewMem(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	cp1 := &Checkpoint{Manifest: Manifest{Epoch: 1, Fragments: 4, Entries: 2, Offsets: map[PartitionID]int64{{0, 1}: 10}},
		Puts: []Entry{{Namespace: 0, Key: []byte("a"), Value: []byte("1")}, {Namespace: 1, Key: []byte("b"), Value: []byte("2")}}}
	cp2 := &Checkpoint{Manifest: Manifest{Epoch: 2, Fragments: 4, Entries: 1, Offsets: map[PartitionID]int64{{0, 1}: 20}},
		Reset: []uint16{1}, Deletes: []Entry{{Namespace: 0, Key: []byte("a")}}, Puts: []Entry{{Namespace: 0, Key: []byte("c"), Value: []byte("3")}}}
	for _, cp := range []*Checkpoint{cp1, cp2} {
		if _, err := src.Write("f", 2, cp); err != nil {
			t.Fatal(err)
		}
		got, err := DecodeCheckpoint(EncodeCheckpoint(cp))
		if err != nil || fmt.Sprint(got) != fmt.Sprint(cp) {
			t.Fatalf("decoded %v (%v), want %v", got, err, cp)
		}
	}
	// The standby has a stale, different copy: the full one replaces it.
	if _, err := dst.Write("f", 2, &Checkpoint{Manifest: Manifest{Epoch: 7, Fragments: 4, Entries: 1},
		Puts: []Entry{{Namespace: 3, Key: []byte("z"), Value: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	full, ok, err := src.Full("f", 2)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	wire, err := DecodeCheckpoint(EncodeCheckpoint(full))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Write("f", 2, wire); err != nil {
		t.Fatal(err)
	}
	var keys []string
	m, ok, err := dst.Load("f", 2, func(e Entry) error {
		keys = append(keys, fmt.Sprintf("%d/%s=%s", e.Namespace, e.Key, e.Value))
		return nil
	})
	if err != nil || !ok || m.Epoch != 2 || fmt.Sprint(keys) != "[0/c=3]" {
		t.Fatalf("standby copy: epoch %d, %v (%v, %v)", m.Epoch, keys, ok, err)
	}
	if mm, ok, err := dst.Manifest("f", 2); err != nil || !ok || mm.Epoch != 2 {
		t.Fatalf("manifest %+v %v %v", mm, ok, err)
	}
}

func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add(EncodeCheckpoint(&Checkpoint{Manifest: Manifest{Epoch: 3, Fragments: 2}, Full: true, Reset: []uint16{4},
		Puts: []Entry{{Namespace: 1, Key: []byte("k"), Value: []byte("v")}}, Deletes: []Entry{{Namespace: 2, Key: []byte("d")}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := DecodeCheckpoint(b)
		if err != nil {
			return
		}
		again, err := DecodeCheckpoint(EncodeCheckpoint(cp))
		if err != nil || fmt.Sprint(again) != fmt.Sprint(cp) {
			t.Fatalf("re-decode: %v %v", again, err)
		}
	})
}

// The checkpoint of a fragment that never took one crosses the wire (a
// hand-off) and restores an empty fragment; a zero Checkpoint did not
// decode, and the new owner waited for the hand-off until its timeout.
func TestEmptyCheckpointCrossesTheWire(t *testing.T) {
	if _, err := DecodeCheckpoint(EncodeCheckpoint(&Checkpoint{Full: true})); err == nil {
		t.Fatal("a checkpoint naming no fragment count decoded")
	}
	cp, err := DecodeCheckpoint(EncodeCheckpoint(Empty(8)))
	if err != nil {
		t.Fatal(err)
	}
	if !cp.Full || cp.Manifest.Fragments != 8 || cp.Manifest.Epoch != 0 || len(cp.Puts) != 0 {
		t.Fatalf("decoded %+v", cp)
	}
}

// What a node knows of settled checkpoints (NoteSettled) is durable once a
// later synced write is, is read back by flow, and a damaged record is an
// error rather than news.
func TestSettledOutlivesACrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s, err := Open("db", fs, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for f, e := range map[int]uint64{0: 7, 3: 1 << 40, 9: 2} {
		if err := s.NoteSettled("flow", f, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.NoteSettled("other", 0, 5); err != nil {
		t.Fatal(err)
	}
	// A checkpoint's synced write makes the notes before it durable.
	if _, err := s.Write("flow", 1, &Checkpoint{Manifest: Manifest{Epoch: 1, Fragments: 10}}); err != nil {
		t.Fatal(err)
	}
	crashed, err := Open("db", fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0}), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer crashed.Close()
	got, err := crashed.Settled("flow")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Settled{0: 7, 3: 1 << 40, 9: 2}); !maps.Equal(got, want) {
		t.Fatalf("after a crash: %v, want %v", got, want)
	}
	if err := crashed.Drop("flow"); err != nil {
		t.Fatal(err)
	}
	if got, err := crashed.Settled("flow"); err != nil || len(got) != 0 {
		t.Fatalf("after Drop: %v, %v", got, err)
	}
	k := fragPrefix('k', "other", 0)
	if err := crashed.db.Set(k, []byte{5, 0, 0, 0, 0}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := crashed.Settled("other"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a damaged record reads as %v, want ErrCorrupt", err)
	}
}
