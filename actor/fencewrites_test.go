package actor

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/recovery"
)

// A fence returns only once the checkpoints its fragments queued before
// they stopped are committed: Place or Resume restores the fragments from
// the store next, and a checkpoint committed during or after that restore
// mixed the older manifest with the newer state (an over-count of the
// events between the two, replayed onto state that held them) or put an
// older lineage over the restored fragment's own.
func TestFenceWaitsForQueuedCheckpoints(t *testing.T) {
	fs := &gatedFS{FS: vfs.NewMem()}
	store, err := recovery.Open("db", fs, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	src, _ := gen.New(gen.Config{Partitions: 3, Seed: 11, Events: 300_000, Rate: 600_000}, word)
	addr, gone := freeAddr(t), freeAddr(t)
	// The engine's checkpoint writes are the only syncs of the store's log
	// here (no alerts, no standby): with them held, the writer holds a
	// round of checkpoints that is not committed.
	held := fs.close()
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet(), Store: store, CheckpointInterval: 20 * time.Millisecond,
		Cluster: &ClusterConfig{Self: "a", Remote: addr, Epoch: 1, Fragments: slices.Repeat([]string{"a"}, 64),
			Readers: slices.Repeat([]string{"a"}, 3), Remotes: map[string]string{"a": addr}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	<-held
	settling := make(chan struct{})
	e.settling = func() { close(settling) }
	fenced := make(chan error, 1)
	go func() {
		fenced <- e.Fence(&ClusterConfig{Fragments: slices.Repeat([]string{"b"}, 64), Readers: slices.Repeat([]string{"b"}, 3),
			Remotes: map[string]string{"b": gone}})
	}()
	select {
	case err := <-fenced:
		fs.open()
		t.Fatalf("Fence returned (err %v) while the checkpoints its fragments queued were not committed", err)
	case <-settling:
	}
	fs.open()
	if err := <-fenced; err != nil {
		t.Fatal(err)
	}
}

// gatedFS holds the syncs of the store's write-ahead log while closed.
type gatedFS struct {
	vfs.FS
	mu   sync.Mutex
	gate chan struct{} // nil: open
	held chan struct{} // closed when a sync first waits at the gate
}

// close holds the log's syncs from now on; the channel it returns is
// closed once one waits.
func (fs *gatedFS) close() <-chan struct{} {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.gate, fs.held = make(chan struct{}), make(chan struct{})
	return fs.held
}

// open lets the held syncs go on, and those that follow.
func (fs *gatedFS) open() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.gate != nil {
		close(fs.gate)
		fs.gate = nil
	}
}

func (fs *gatedFS) wait() {
	fs.mu.Lock()
	gate, held := fs.gate, fs.held
	if gate != nil {
		fs.held = nil
	}
	fs.mu.Unlock()
	if gate == nil {
		return
	}
	if held != nil {
		close(held)
	}
	<-gate
}

func (fs *gatedFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return gatedFile{f, fs}, nil
}

func (fs *gatedFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs *gatedFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	return fs.wrap(name, f, err)
}

func (fs *gatedFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

type gatedFile struct {
	vfs.File
	fs *gatedFS
}

func (f gatedFile) Sync() error {
	f.fs.wait()
	return f.File.Sync()
}

func (f gatedFile) SyncData() error {
	f.fs.wait()
	return f.File.SyncData()
}

func (f gatedFile) SyncTo(length int64) (bool, error) {
	f.fs.wait()
	return f.File.SyncTo(length)
}
