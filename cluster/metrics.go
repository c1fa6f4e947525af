package cluster

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics follow Prometheus' naming conventions: a tessera_ prefix, base
// units (seconds, bytes) in the name, _total for counters. Counters and
// gauges of the engine are read at scrape time (collector); checkpoint and
// request durations are histograms observed as they happen (metrics). Every
// node exports what it owns: a cluster-wide figure is a sum over nodes
// (events, lag, moves) or the same on every node (members, epoch).
// docs/grafana/tessera.json is a Grafana dashboard over them.
type metrics struct {
	ckpt     prometheus.Histogram
	requests *prometheus.HistogramVec
	moves    *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		ckpt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tessera_checkpoint_duration_seconds",
			Help:    "Time from taking a fragment's checkpoint to its being durable (written and synced), over this node's fragments.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms to 16 s
		}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tessera_http_request_duration_seconds",
			Help: "Time to answer an HTTP API request, by route pattern and status code (watch streams are not timed). " +
				"Routes GET /v1/views/{view}, GET /v1/views/{view}/keys/{key} (and keys/{$}, the empty key) and GET /v1/views/{view}/keys (a lookup by key_base64) are the view queries.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18), // 0.1 ms to 13 s
		}, []string{"route", "code"}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tessera_fragment_moves_total",
			Help: "Fragments this node took over at placement changes: kind failover (the old owner died) or handoff (it handed the fragment over).",
		}, []string{"kind"}),
	}
}

func (n *Node) registerMetrics() {
	n.reg = prometheus.NewRegistry()
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &collector{n: n},
		n.met.ckpt, n.met.requests, n.met.moves)
	for _, k := range []string{"failover", "handoff"} {
		n.met.moves.WithLabelValues(k) // export zeros: rate() needs the series before the first move
	}
}

// timed observes each request's duration by the route pattern the mux
// chose; the mux sets r.Pattern on the request it is handed.
func (m *metrics) timed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" || strings.HasSuffix(route, "/watch") || route == "/" {
			// Unrouted (404s, refused tokens) would make a label per
			// path; watches last as long as their client.
			return
		}
		m.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Observe(time.Since(start).Seconds())
	})
}

// statusWriter keeps the status code; it stays a Flusher for the streams.
type statusWriter struct {
	http.ResponseWriter
	code    int
	written bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.written {
		w.code, w.written = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.written = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// collector reads the engine's counters at scrape time.
type collector struct{ n *Node }

var (
	mRead      = prometheus.NewDesc("tessera_source_events_total", "Events read from a source partition, replays included.", []string{"source", "partition"}, nil)
	mPosition  = prometheus.NewDesc("tessera_source_position", "Offset after the last record read from a source partition.", []string{"source", "partition"}, nil)
	mCommitted = prometheus.NewDesc("tessera_source_committed", "Offset up to which every fragment's checkpoint covers a source partition.", []string{"source", "partition"}, nil)
	mLag       = prometheus.NewDesc("tessera_source_lag_records", "Records read from a source partition that not every fragment's durable checkpoint covers yet (position - committed): what a restart reads again.", []string{"source", "partition"}, nil)
	mMalformed = prometheus.NewDesc("tessera_source_malformed_total", "Malformed records in a source partition, sent to the dead-letter output.", []string{"source", "partition"}, nil)
	mStalls    = prometheus.NewDesc("tessera_reader_stalls_total", "Times a reader waited for a fragment's credits.", []string{"source", "partition"}, nil)
	mCrossed   = prometheus.NewDesc("tessera_reader_crossed_records_total", "Records a reader sent to fragments on other nodes.", []string{"source", "partition"}, nil)
	mApplied   = prometheus.NewDesc("tessera_fragment_events_total", "Records applied by a fragment.", []string{"fragment"}, nil)
	mBatches   = prometheus.NewDesc("tessera_fragment_batches_total", "Batches applied by a fragment.", []string{"fragment"}, nil)
	mFailures  = prometheus.NewDesc("tessera_fragment_failures_total", "User-function failures; each restores the fragment from its checkpoint.", []string{"fragment"}, nil)
	mPoison    = prometheus.NewDesc("tessera_fragment_dead_letters_total", "Events dead-lettered after their last failed attempt.", []string{"fragment"}, nil)
	mRestores  = prometheus.NewDesc("tessera_fragment_restores_total", "Restores of a fragment from its last checkpoint.", []string{"fragment"}, nil)
	mReplayed  = prometheus.NewDesc("tessera_fragment_replayed_offsets_total", "Source offsets received again after a restore or restart.", []string{"fragment"}, nil)
	mTooLate   = prometheus.NewDesc("tessera_fragment_too_late_total", "Events later than every window's allowed lateness, sent to TooLate outputs.", []string{"fragment"}, nil)
	mEpoch     = prometheus.NewDesc("tessera_fragment_checkpoint_epoch", "Epoch of the fragment's last durable checkpoint.", []string{"fragment"}, nil)
	mCkptBytes = prometheus.NewDesc("tessera_fragment_checkpoint_bytes_total", "Bytes written by the fragment's checkpoints.", []string{"fragment"}, nil)
	mCkptAge   = prometheus.NewDesc("tessera_fragment_checkpoint_age_seconds", "Time since the fragment's last durable checkpoint was taken.", []string{"fragment"}, nil)
	mCkptTook  = prometheus.NewDesc("tessera_fragment_checkpoint_last_duration_seconds", "How long the fragment's last durable checkpoint took from being taken to being durable.", []string{"fragment"}, nil)
	mFragments = prometheus.NewDesc("tessera_fragments_owned", "Fragments running on this node.", nil, nil)
	mMembers   = prometheus.NewDesc("tessera_cluster_members", "Live members of the cluster as this node sees them (1 for a single node).", nil, nil)
	mPlaceEp   = prometheus.NewDesc("tessera_placement_epoch", "The placement epoch this node runs.", nil, nil)
	mDead      = prometheus.NewDesc("tessera_dead_letters_total", "Dead letters written.", nil, nil)
)

var allDescs = []*prometheus.Desc{mRead, mPosition, mCommitted, mLag, mMalformed, mStalls, mCrossed, mApplied, mBatches, mFailures, mPoison,
	mRestores, mReplayed, mTooLate, mEpoch, mCkptBytes, mCkptAge, mCkptTook, mFragments, mMembers, mPlaceEp, mDead}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	e := c.n.eng
	for i, r := range e.Readers() {
		p := fmt.Sprint(r.Partition)
		pos, com := r.Position.Load(), e.Committed(i)
		counter(mRead, r.Events.Load(), r.Source, p)
		gauge(mPosition, float64(pos), r.Source, p)
		gauge(mCommitted, float64(com), r.Source, p)
		gauge(mLag, float64(lag(pos, com)), r.Source, p)
		counter(mMalformed, r.Bad.Load(), r.Source, p)
		counter(mStalls, r.Stalls.Load(), r.Source, p)
		counter(mCrossed, r.Crossed.Load(), r.Source, p)
	}
	now := time.Now()
	frags := e.Fragments()
	for _, f := range frags {
		id := fmt.Sprint(f.ID)
		counter(mApplied, f.Events.Load(), id)
		counter(mBatches, f.Batches.Load(), id)
		counter(mFailures, f.Failures.Load(), id)
		counter(mPoison, f.Dead.Load(), id)
		counter(mRestores, f.Restores.Load(), id)
		counter(mReplayed, f.Replayed.Load(), id)
		counter(mTooLate, f.TooLate.Load(), id)
		counter(mCkptBytes, f.CkptBytes.Load(), id)
		gauge(mEpoch, float64(f.Epoch.Load()), id)
		if at := f.CkptTime.Load(); at != 0 {
			gauge(mCkptAge, now.Sub(time.Unix(0, at)).Seconds(), id)
			gauge(mCkptTook, time.Duration(f.CkptTook.Load()).Seconds(), id)
		}
	}
	gauge(mFragments, float64(len(frags)))
	members := 1
	if c.n.mem != nil {
		members = len(c.n.mem.Members())
	}
	gauge(mMembers, float64(members))
	epoch := c.n.placement().Epoch
	if c.n.mem == nil {
		epoch = 1 // a single node has one placement
	}
	gauge(mPlaceEp, float64(epoch))
	counter(mDead, c.n.dl.count())
}
