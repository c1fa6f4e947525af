package cluster

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/flows"
)

// Flags are the node flags every example binary shares. Each has an
// environment variable, TESSERA_ and the flag's name in upper case with
// dashes as underscores (TESSERA_HTTP, TESSERA_CHECKPOINT_INTERVAL, ...),
// which sets its default; a flag given on the command line wins.
// Register does the same for the program's own flags (FromEnv).
type Flags struct {
	Node       string
	HTTP       string
	Data       string
	Fragments  int
	Checkpoint time.Duration
	Progress   time.Duration
	LogLevel   string
	Gossip     string
	Remote     string
	Join       string // comma-separated gossip addresses
	Expect     int
	// UncleanAfter: see actor.Config.UncleanAfter.
	UncleanAfter time.Duration
	// Layout: print the flow's layout and exit (flows.Layout).
	Layout bool
	// Streams are not flags: a program's build function adds the streams
	// that take pushed events (see Config.Streams).
	Streams []Stream
	// Pages are the program's own GET routes (see Config.Pages): not a
	// flag, a program's build function sets them.
	Pages map[string]http.Handler

	// Security (see Security): files, never secrets on the command line.
	TLSCert       string
	TLSKey        string
	TLSCA         string
	AuthTokenFile string
	AuthHealth    bool
	GossipKey     string
}

// Register adds the node flags to fs and sets every flag of fs, the
// program's own too, from the environment (FromEnv). It returns an error
// if an environment variable does not parse.
func (f *Flags) Register(fs *flag.FlagSet) error {
	fs.StringVar(&f.Node, "node", "", "node name (default: host name)")
	fs.StringVar(&f.HTTP, "http", "127.0.0.1:8080", "HTTP listen address")
	fs.StringVar(&f.Data, "data", "", "data directory: checkpoints and dead letters (empty: in memory, lost at exit)")
	fs.IntVar(&f.Fragments, "fragments", flows.DefaultFragments, "fragments (key groups) of the flow's state")
	fs.DurationVar(&f.Checkpoint, "checkpoint-interval", time.Second, "how often each fragment checkpoints")
	fs.DurationVar(&f.Progress, "progress", 5*time.Second, "print progress this often (0: never)")
	fs.StringVar(&f.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.Gossip, "gossip", "", "cluster: gossip address host:port (empty: a single node)")
	fs.StringVar(&f.Remote, "remote", "", "cluster: protoactor remote address host:port for node-to-node messages")
	fs.StringVar(&f.Join, "join", "", "cluster: comma-separated gossip addresses of nodes to join (empty: start a cluster)")
	fs.IntVar(&f.Expect, "expect", 1, "cluster: wait for this many members before placing fragments")
	fs.DurationVar(&f.UncleanAfter, "unclean-after", 0, "cluster: a fragment whose newest settled checkpoint is only on members that are down starts without it after this long, and may deliver outputs again with other values (0: it waits for them)")
	fs.BoolVar(&f.Layout, "layout", false, "print the flow's layout (what its checkpoints are laid out by: a node refuses checkpoints of another) and exit")
	fs.StringVar(&f.TLSCert, "tls-cert", "", "security: PEM certificate file: serve HTTPS (with -tls-key)")
	fs.StringVar(&f.TLSKey, "tls-key", "", "security: PEM private key file of -tls-cert")
	fs.StringVar(&f.TLSCA, "tls-ca", "", "security: PEM CA file: mutual TLS between nodes with -tls-cert, and trust for the other nodes' HTTPS")
	fs.StringVar(&f.AuthTokenFile, "auth-token-file", "", "security: bearer tokens, one \"ROLE TOKEN\" per line (roles read, write, admin); every /v1/ route then needs one")
	fs.BoolVar(&f.AuthHealth, "auth-health", false, "security: with -auth-token-file, /healthz, /readyz and /metrics need a token too")
	fs.StringVar(&f.GossipKey, "gossip-key", "", "security: file with a base64 gossip key of 16, 24 or 32 bytes: encrypted gossip, nodes without it cannot join")
	return FromEnv(fs)
}

// FromEnv sets each flag of fs whose environment variable is set: TESSERA_
// and the flag's name in upper case with dashes as underscores
// (TESSERA_SINK_TOPIC for -sink-topic). The value becomes the flag's
// default, so that one given on the command line, parsed after, wins. It
// returns an error naming every variable that does not parse.
func FromEnv(fs *flag.FlagSet) error {
	var errs []string
	fs.VisitAll(func(fl *flag.Flag) {
		name := "TESSERA_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if err := fl.Value.Set(v); err != nil {
			errs = append(errs, fmt.Sprintf("%s=%q: %s", name, v, envErr(fl, err)))
			return
		}
		fl.DefValue = fl.Value.String()
	})
	if len(errs) > 0 {
		return fmt.Errorf("environment: %s", strings.Join(errs, "; "))
	}
	return nil
}

// envErr says what fl wants, for a value it refused with err (the flag
// package's own errors say only "parse error").
func envErr(fl *flag.Flag, err error) string {
	g, ok := fl.Value.(flag.Getter)
	if !ok {
		return err.Error()
	}
	switch g.Get().(type) {
	case bool:
		return "not a boolean"
	case int, int64, uint, uint64:
		return "not an integer"
	case float64:
		return "not a number"
	case time.Duration:
		return "not a duration (such as 500ms or 2m)"
	}
	return err.Error()
}

// Parse registers the node flags on fs, beside the flags the program
// defined there (Register), parses args and refuses positional arguments.
func (f *Flags) Parse(fs *flag.FlagSet, args []string) error {
	if err := f.Register(fs); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return nil
}

// Main is an example binary's main: it runs run with the command line
// until SIGINT or SIGTERM, and exits 2 after -help, 1 with the error
// (prefixed by name) if run fails.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Run is an example binary's run (see Main) once it has its own flags in
// fs: it parses args into them and the node flags, builds the flow with
// build (which checks the program's flags and makes its source), and
// serves it with urls until ctx ends (see Serve).
func Run(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer,
	build func(node *Flags) (*flows.Flow, error), urls [][2]string) error {
	fs.SetOutput(stderr)
	var node Flags
	if err := node.Parse(fs, args); err != nil {
		return err
	}
	flow, err := build(&node)
	if err != nil {
		return err
	}
	if node.Layout {
		layout, err := flows.Layout(flow)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, strings.Join(layout, "\n"))
		return err
	}
	logger, err := node.Logger(stderr)
	if err != nil {
		return err
	}
	return node.Serve(ctx, flow, stdout, logger, urls)
}

// Security reads the files the security flags name.
func (f *Flags) Security() (Security, error) {
	var sec Security
	var err error
	if sec.TLS, sec.RemoteTLS, sec.PeerCAs, err = LoadTLS(f.TLSCert, f.TLSKey, f.TLSCA); err != nil {
		return sec, err
	}
	if f.AuthTokenFile != "" {
		if sec.Tokens, err = LoadTokens(f.AuthTokenFile); err != nil {
			return sec, err
		}
	} else if f.AuthHealth {
		return sec, errors.New("-auth-health needs -auth-token-file")
	}
	sec.ProtectHealth = f.AuthHealth
	if f.GossipKey != "" {
		if sec.GossipKey, err = LoadGossipKey(f.GossipKey); err != nil {
			return sec, err
		}
	}
	if f.Gossip == "" {
		sec.RemoteTLS = nil // one node: no peer to present a certificate to
	}
	return sec, nil
}

// Logger is a text logger on w at the flags' level.
func (f *Flags) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.LogLevel)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), nil
}

// Serve runs flow on a node configured by the flags until ctx ends: it
// prints the URLs to open (urls: path and what it shows), then a progress
// line every -progress.
func (f *Flags) Serve(ctx context.Context, flow *flows.Flow, stdout io.Writer, logger *slog.Logger, urls [][2]string) error {
	if f.Checkpoint <= 0 {
		return fmt.Errorf("-checkpoint-interval must be positive, got %v", f.Checkpoint)
	}
	if f.Progress < 0 {
		return fmt.Errorf("-progress must not be negative, got %v", f.Progress)
	}
	if f.UncleanAfter < 0 {
		return fmt.Errorf("-unclean-after must not be negative, got %v", f.UncleanAfter)
	}
	sec, err := f.Security()
	if err != nil {
		return err
	}
	var join []string
	for _, j := range strings.Split(f.Join, ",") {
		if j = strings.TrimSpace(j); j != "" {
			join = append(join, j)
		}
	}
	n := NewNode(Config{
		Flow: flow, Name: f.Node, HTTPAddr: f.HTTP, DataDir: f.Data, Logger: logger,
		Engine: actor.Config{CheckpointInterval: f.Checkpoint, UncleanAfter: f.UncleanAfter},
		Gossip: f.Gossip, Remote: f.Remote, Join: join, Expect: f.Expect, Streams: f.Streams, Security: sec, Pages: f.Pages,
	})
	errc := make(chan error, 1)
	go func() { errc <- n.Run(ctx) }()
	select {
	case err := <-errc:
		return err
	case <-n.Ready():
	}
	base := n.URL()
	var b strings.Builder
	fmt.Fprintf(&b, "%s is running. Open:\n", flow.Name())
	width := 0
	for _, u := range urls {
		width = max(width, len(base)+len(u[0]))
	}
	for _, u := range urls {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, base+u[0], u[1])
	}
	b.WriteString("Ctrl-C stops.\n")
	io.WriteString(stdout, b.String())
	var tick <-chan time.Time
	if f.Progress > 0 {
		t := time.NewTicker(f.Progress)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case err := <-errc:
			return err
		case <-tick:
			st := n.State()
			var read int64
			done := true
			for _, r := range st.Readers {
				read += r.Events
				done = done && r.Done
			}
			state := ""
			if done {
				state = " (input finished; serving)"
			}
			fmt.Fprintf(stdout, "progress: %d events read, %.0f events/s, %d dead letters%s\n", read, st.EventsPerSec, st.DeadLetters, state)
		}
	}
}
