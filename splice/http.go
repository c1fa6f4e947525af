package splice

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Query limits.
const (
	DefaultLimit = 1000
	MaxLimit     = 10_000_000
	MaxTop       = 100_000
)

// HandlerConfig configures the view routes.
type HandlerConfig struct {
	// Done ends watch streams (the node is stopping); nil for never.
	Done   <-chan struct{}
	Logger *slog.Logger
}

// Register adds the view routes to mux:
//
//	GET /v1/views                      the views, their kinds and freshness
//	GET /v1/views/{view}               an aggregate's value, a keyed view's entries, or windows
//	GET /v1/views/{view}/keys/{key}    one key of a keyed or windowed keyed view
//	GET /v1/views/{view}/keys?key_base64=...  the same, the key given by its bytes
//	GET /v1/views/{view}/watch         server-sent events as the answer changes
//
// A watch takes interval (250ms to 1m, default 1s); its watchers of the
// same request and interval share one evaluation per interval. Windowed
// views take window=latest, from and to (RFC 3339), and limit. Keyed
// queries take limit (default 1000, at most 10,000,000), after (page on
// after this key; after= is after the empty key), prefix, and top (the top
// N by value instead of key order). A key is one path segment, escaped as
// URLs escape it (a%2Fb is the key "a/b", %FF the byte 0xFF); /keys/ is
// the empty key. A key that is not valid UTF-8 is printed with its bytes
// in base64 beside it (key_base64, next_after_base64), and after_base64,
// prefix_base64 and key_base64 take bytes back in place of after, prefix
// and a key in the path (keybytes.go). Windowed keyed views take both:
// window, from and to choose the windows, and limit, after, prefix and top
// the entries of each window; a key of one takes window, from and to.
// Every query and key lookup also takes consistency (latest, the default,
// or snapshot: one cut), min_offsets (source/partition:offset pairs,
// comma-separated: answer once they are covered) and timeout (how long to
// wait for them; 504 after), and its answer states its cut (read.go).
// Errors are JSON {"error": "..."}: 404 for an unknown view or key, 400
// for bad parameters; a key not found also states its fragment's freshness
// and the cut, as of which it is absent.
func Register(mux *http.ServeMux, g Gatherer, cfg HandlerConfig) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &handler{g: g, cfg: cfg, hub: newWatchHub(g, cfg.Done)}
	mux.HandleFunc("GET /v1/views", h.list)
	mux.HandleFunc("GET /v1/views/{view}", h.view)
	mux.HandleFunc("GET /v1/views/{view}/keys/{key}", h.key)
	mux.HandleFunc("GET /v1/views/{view}/keys/{$}", h.emptyKey)
	mux.HandleFunc("GET /v1/views/{view}/keys", h.keyBytes)
	mux.HandleFunc("GET /v1/views/{view}/watch", h.watch)
}

type handler struct {
	g   Gatherer
	cfg HandlerConfig
	hub *watchHub
}

// WriteJSON writes v as JSON with status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// WriteError writes {"error": msg} with status code.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, map[string]string{"error": msg})
}

// unavailableAnswer is the body of a 503: the fragments that could not
// answer (moving to another node, restoring), and when to ask again.
type unavailableAnswer struct {
	Error      string `json:"error"`
	Fragments  []int  `json:"fragments,omitempty"`
	RetryAfter int    `json:"retry_after_sec"`
}

// WriteUnavailable answers 503 with Retry-After (whole seconds, at least
// one) and the fragments err names, if it is an *UnavailableError.
func WriteUnavailable(w http.ResponseWriter, err error) {
	a := unavailableAnswer{Error: cleanError(err), RetryAfter: 1}
	var ue *UnavailableError
	if errors.As(err, &ue) {
		a.Fragments = ue.Fragments
		a.RetryAfter = max(1, int(math.Ceil(ue.RetryAfter.Seconds())))
	}
	w.Header().Set("Retry-After", strconv.Itoa(a.RetryAfter))
	WriteJSON(w, http.StatusServiceUnavailable, a)
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrUnknownView), errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrBadRequest):
		code = http.StatusBadRequest
	case errors.Is(err, ErrUnavailable):
		WriteUnavailable(w, err)
		return
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return // the client left
	}
	if code == http.StatusInternalServerError {
		h.cfg.Logger.Error("view query", "path", r.URL.Path, "err", err)
	}
	WriteError(w, code, cleanError(err))
}

// cleanError drops the sentinel prefix of joined errors.
func cleanError(err error) string {
	if errors.Is(err, ErrUnknownView) || errors.Is(err, ErrNotFound) {
		return err.Error()
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var b bytes.Buffer
		for _, e := range j.Unwrap() {
			if e == ErrBadRequest {
				continue
			}
			if b.Len() > 0 {
				b.WriteString(": ")
			}
			b.WriteString(e.Error())
		}
		return b.String()
	}
	return err.Error()
}

type viewInfo struct {
	Name    string `json:"name"`
	Kind    Kind   `json:"kind"`
	Algebra string `json:"algebra,omitempty"`
	URL     string `json:"url"`
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "" {
		WriteError(w, http.StatusBadRequest, "/v1/views takes no parameters")
		return
	}
	var vs []viewInfo
	for _, s := range h.g.Views() {
		vs = append(vs, viewInfo{Name: s.Name, Kind: s.Kind, Algebra: s.Algebra, URL: "/v1/views/" + url.PathEscape(s.Name)})
	}
	WriteJSON(w, http.StatusOK, map[string]any{"views": vs, "freshness": h.g.Freshness()})
}

// Params parses r's query string. A malformed one (a bad %-escape, a
// semicolon) is a bad request: url.URL.Query drops such pairs silently, so
// that ?after=%ZZ would answer from the start.
func Params(r *http.Request) (url.Values, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed query string: %v", ErrBadRequest, err)
	}
	// Every parameter of every route takes one value: a second one would
	// otherwise be dropped without a word, or win over the first.
	for k, vals := range v {
		if len(vals) != 1 {
			return nil, fmt.Errorf("%w: parameter %q given %d times", ErrBadRequest, k, len(vals))
		}
	}
	return v, nil
}

// ParseQuery reads a keyed query from URL parameters; unknown parameters
// are errors, so that a typo does not silently return everything. A key
// of after or prefix may come as its bytes in base64 (after_base64,
// prefix_base64) instead.
func ParseQuery(v url.Values, allowed ...string) (Query, error) {
	q := Query{Limit: DefaultLimit}
	ok := map[string]bool{"limit": true, "after": true, "after_base64": true, "prefix": true, "prefix_base64": true, "top": true}
	for _, a := range allowed {
		ok[a] = true
	}
	for k, vals := range v {
		if !ok[k] {
			return q, fmt.Errorf("%w: unknown parameter %q", ErrBadRequest, k)
		}
		if len(vals) != 1 {
			return q, fmt.Errorf("%w: parameter %q given %d times", ErrBadRequest, k, len(vals))
		}
	}
	num := func(name string, lo, hi int) (int, error) {
		s := v.Get(name)
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("%w: %s must be an integer in [%d, %d], got %q", ErrBadRequest, name, lo, hi, s)
		}
		return n, nil
	}
	var err error
	if v.Has("limit") {
		if q.Limit, err = num("limit", 1, MaxLimit); err != nil {
			return q, err
		}
	}
	if v.Has("top") {
		if q.Top, err = num("top", 1, MaxTop); err != nil {
			return q, err
		}
		if v.Has("after") || v.Has("after_base64") {
			return q, fmt.Errorf("%w: top and after do not combine", ErrBadRequest)
		}
	}
	if q.After, q.HasAfter, err = keyParam(v, "after"); err != nil {
		return q, err
	}
	q.Prefix, _, err = keyParam(v, "prefix")
	return q, err
}

func (h *handler) evaluate(r *http.Request) (Result, error) {
	req, o, err := h.request(r)
	if err != nil {
		return Result{}, err
	}
	return EvaluateRead(r.Context(), h.g, req, o)
}

// request reads the view request of r's path and parameters, with its
// read options (but the parameters allowed, which the caller reads).
func (h *handler) request(r *http.Request, allowed ...string) (Request, ReadOptions, error) {
	view := r.PathValue("view")
	spec, err := FindSpec(h.g, view)
	if err != nil {
		return Request{}, ReadOptions{}, fmt.Errorf("%w %q", ErrUnknownView, view)
	}
	params, err := Params(r)
	if err != nil {
		return Request{}, ReadOptions{}, err
	}
	for _, a := range allowed {
		params.Del(a)
	}
	o, err := ParseReadOptions(params)
	if err != nil {
		return Request{}, o, err
	}
	var q Query
	switch spec.Kind {
	case Windowed:
		q, err = ParseWindowQuery(params)
		return Request{View: view, Op: OpWindows, Query: q}, o, err
	case WindowedKeyed:
		q, err = ParseWindowedKeyedQuery(params)
		return Request{View: view, Op: OpEntries, Query: q}, o, err
	case Aggregate:
		if len(params) > 0 {
			return Request{}, o, fmt.Errorf("%w: view %q is an aggregate: it takes no query parameters but consistency, min_offsets and timeout", ErrBadRequest, view)
		}
		return Request{View: view, Op: OpValue}, o, nil
	}
	q, err = ParseQuery(params)
	return Request{View: view, Op: OpEntries, Query: q}, o, err
}

// cutOf is res's cut for a JSON answer (nil when it has none: watches).
func cutOf(res Result) *Cut {
	if res.Cut.Consistency == "" {
		return nil
	}
	return &res.Cut
}

// writeCut adds "cut" to a streamed answer that has one.
func writeCut(bw *bufio.Writer, res Result) {
	if c := cutOf(res); c != nil {
		bw.WriteString(`,"cut":`)
		writeJSONValue(bw, c)
	}
}

func (h *handler) view(w http.ResponseWriter, r *http.Request) {
	res, err := h.evaluate(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	switch res.Spec.Kind {
	case Aggregate:
		WriteJSON(w, http.StatusOK, aggregateAnswer(res))
		return
	case Windowed:
		WriteJSON(w, http.StatusOK, windowedAnswer(res))
		return
	case WindowedKeyed:
		writeKeyedWindows(w, res)
		return
	}
	writeEntries(w, res)
}

// ParseWindowQuery reads a windowed query from URL parameters: window
// ("latest": the latest complete window), from and to (RFC 3339 times:
// windows starting in [from, to)), and limit (the latest limit windows in
// range, default 1000).
func ParseWindowQuery(v url.Values) (Query, error) {
	q := Query{Limit: DefaultLimit}
	for k, vals := range v {
		switch k {
		case "window", "from", "to", "limit":
		default:
			return q, fmt.Errorf("%w: unknown parameter %q (a windowed view takes window, from, to, limit)", ErrBadRequest, k)
		}
		if len(vals) != 1 {
			return q, fmt.Errorf("%w: parameter %q given %d times", ErrBadRequest, k, len(vals))
		}
	}
	if err := parseWindowRange(v, &q); err != nil {
		return q, err
	}
	if v.Has("limit") {
		n, err := strconv.Atoi(v.Get("limit"))
		if err != nil || n < 1 || n > MaxLimit {
			return q, fmt.Errorf("%w: limit must be an integer in [1, %d], got %q", ErrBadRequest, MaxLimit, v.Get("limit"))
		}
		q.Limit = n
	}
	return q, nil
}

// minEventTime and maxEventTime are the times Unix nanoseconds hold.
var (
	minEventTime = time.Unix(0, math.MinInt64).UTC()
	maxEventTime = time.Unix(0, math.MaxInt64).UTC()
)

// parseWindowRange reads the window selection of a windowed or windowed
// keyed query: window ("latest"), from and to (RFC 3339 times: windows
// starting in [from, to)).
func parseWindowRange(v url.Values, q *Query) error {
	if v.Has("window") {
		if w := v.Get("window"); w != "latest" {
			return fmt.Errorf("%w: window must be \"latest\", got %q", ErrBadRequest, w)
		}
		q.Latest = true
	}
	at := func(name string) (int64, error) {
		t, err := time.Parse(time.RFC3339Nano, v.Get(name))
		if err != nil {
			return 0, fmt.Errorf("%w: %s must be an RFC 3339 time, got %q", ErrBadRequest, name, v.Get(name))
		}
		// Event times are Unix nanoseconds: UnixNano of a time outside
		// them wraps around.
		if t.Before(minEventTime) || t.After(maxEventTime) {
			return 0, fmt.Errorf("%w: %s must be between %s and %s (event times are int64 nanoseconds), got %q",
				ErrBadRequest, name, minEventTime.Format(time.RFC3339Nano), maxEventTime.Format(time.RFC3339Nano), v.Get(name))
		}
		return t.UnixNano(), nil
	}
	var err error
	q.From = math.MinInt64
	if v.Has("from") {
		if q.From, err = at("from"); err != nil {
			return err
		}
	}
	if v.Has("to") {
		if q.To, err = at("to"); err != nil {
			return err
		}
		q.Bounded = true // a to at the Unix epoch is a bound
		if q.To <= q.From {
			return fmt.Errorf("%w: to must be after from", ErrBadRequest)
		}
	}
	return nil
}

type windowAnswer struct {
	View      string      `json:"view"`
	Kind      Kind        `json:"kind"`
	Algebra   string      `json:"algebra"`
	Window    *Window     `json:"window,omitempty"`  // ?window=latest
	Windows   []Window    `json:"windows,omitempty"` // otherwise
	More      bool        `json:"more"`              // earlier windows in range were left out (limit)
	Horizon   *time.Time  `json:"horizon,omitempty"` // windows ending before it may have been dropped (retention)
	Complete  bool        `json:"complete"`          // every fragment's input ended and was applied: the answer is final
	Stale     bool        `json:"stale,omitempty"`   // a fragment answered from a standby's copy
	Cut       *Cut        `json:"cut,omitempty"`
	Freshness []Freshness `json:"freshness"`
}

func windowedAnswer(res Result) windowAnswer {
	a := windowAnswer{View: res.Spec.Name, Kind: res.Spec.Kind, Algebra: res.Spec.Algebra, More: res.More, Freshness: res.Freshness,
		Complete: res.Complete(), Stale: res.Stale(), Cut: cutOf(res)}
	if res.Latest && len(res.Windows) == 1 {
		a.Window = &res.Windows[0]
	} else {
		a.Windows = res.Windows
		if a.Windows == nil {
			a.Windows = []Window{}
		}
	}
	if res.Horizon > 0 {
		t := time.Unix(0, res.Horizon).UTC()
		a.Horizon = &t
	}
	return a
}

type aggAnswer struct {
	View      string      `json:"view"`
	Kind      Kind        `json:"kind"`
	Algebra   string      `json:"algebra"`
	Value     any         `json:"value"`
	Complete  bool        `json:"complete"`
	Stale     bool        `json:"stale,omitempty"` // a fragment answered from a standby's copy
	Cut       *Cut        `json:"cut,omitempty"`
	Freshness []Freshness `json:"freshness"`
}

func aggregateAnswer(res Result) aggAnswer {
	return aggAnswer{View: res.Spec.Name, Kind: res.Spec.Kind, Algebra: res.Spec.Algebra, Value: res.Value, Freshness: res.Freshness,
		Complete: res.Complete(), Stale: res.Stale(), Cut: cutOf(res)}
}

// writeEntries streams a keyed answer: entries may number millions.
func writeEntries(w http.ResponseWriter, res Result) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(`{"view":`)
	writeJSONValue(bw, res.Spec.Name)
	bw.WriteString(`,"kind":"keyed","entries":[`)
	for i, e := range res.Entries {
		if i > 0 {
			bw.WriteByte(',')
		}
		writeEntry(bw, e)
	}
	bw.WriteString(`],"more":`)
	bw.WriteString(strconv.FormatBool(res.More))
	if res.More && len(res.Entries) > 0 {
		bw.WriteByte(',')
		writeKeyField(bw, "next_after", res.Entries[len(res.Entries)-1].Key)
	}
	bw.WriteString(`,"complete":`)
	bw.WriteString(strconv.FormatBool(res.Complete()))
	writeStale(bw, res)
	writeCut(bw, res)
	bw.WriteString(`,"freshness":`)
	writeJSONValue(bw, res.Freshness)
	bw.WriteString("}\n")
	bw.Flush()
}

// writeStale adds "stale":true to a streamed answer that a standby's copy
// answered in part.
func writeStale(bw *bufio.Writer, res Result) {
	if res.Stale() {
		bw.WriteString(`,"stale":true`)
	}
}

// writeEntry writes {"key":...,"value":...}, with "key_base64" if the key
// is not valid UTF-8; for one that is, it allocates nothing but what the
// value's encoding does.
func writeEntry(bw *bufio.Writer, e Entry) {
	bw.WriteByte('{')
	writeKeyField(bw, "key", e.Key)
	bw.WriteString(`,"value":`)
	writeJSONValue(bw, e.Value)
	bw.WriteByte('}')
}

func writeJSONValue(bw *bufio.Writer, v any) {
	switch x := v.(type) {
	case int64:
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), x, 10))
		return
	case string:
		writeJSONString(bw, x)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(fmt.Sprintf("unencodable value: %v", err))
	}
	bw.Write(b)
}

// safeString reports whether s needs no JSON escaping.
func safeString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}

// notFoundAnswer is the 404 of a key lookup: the key is absent from its
// fragment as of the offsets it states.
type notFoundAnswer struct {
	Error     string      `json:"error"`
	View      string      `json:"view"`
	Key       string      `json:"key"`
	KeyBase64 string      `json:"key_base64,omitempty"` // the key's bytes, if it is not valid UTF-8
	Stale     bool        `json:"stale,omitempty"`
	Cut       *Cut        `json:"cut,omitempty"`
	Freshness []Freshness `json:"freshness"`
}

type keyAnswer struct {
	View      string      `json:"view"`
	Key       string      `json:"key"`
	KeyBase64 string      `json:"key_base64,omitempty"`
	Value     any         `json:"value"`
	Complete  bool        `json:"complete"` // its fragment's input ended and was applied: the value is final
	Stale     bool        `json:"stale,omitempty"`
	Cut       *Cut        `json:"cut,omitempty"`
	Freshness []Freshness `json:"freshness"`
}

func (h *handler) key(w http.ResponseWriter, r *http.Request) {
	h.lookup(w, r, r.PathValue("key"), false)
}

// emptyKey answers /v1/views/{view}/keys/, the empty key's lookup, and
// /keys/%2F: the mux unescapes a last segment before it matches, and takes
// the "/" of the key "/" for the trailing slash of /keys/.
func (h *handler) emptyKey(w http.ResponseWriter, r *http.Request) {
	p := r.URL.EscapedPath()
	key, _ := url.PathUnescape(p[strings.LastIndexByte(p, '/')+1:]) // "" or "/": net/http parsed the path
	h.lookup(w, r, key, false)
}

// keyBytes answers GET /v1/views/{view}/keys?key_base64=...: the lookup
// of the key whose bytes the parameter gives. A request that does not
// name key_base64 has no route, as before there was this one (it is not
// a redirect to /keys/, the empty key's lookup).
func (h *handler) keyBytes(w http.ResponseWriter, r *http.Request) {
	// Named even in a malformed query string: that is a bad lookup.
	if !strings.Contains(r.URL.RawQuery, "key_base64") {
		noKeyRoute(w, r)
		return
	}
	h.lookup(w, r, "", true)
}

func noKeyRoute(w http.ResponseWriter, r *http.Request) {
	WriteError(w, http.StatusNotFound, "no route for "+r.URL.Path+
		": a key's lookup is /v1/views/{view}/keys/{key} or /v1/views/{view}/keys?key_base64={its bytes in base64}")
}

// lookup answers the lookup of key, or, byBytes, of the key the
// parameter key_base64 gives.
func (h *handler) lookup(w http.ResponseWriter, r *http.Request, key string, byBytes bool) {
	view := r.PathValue("view")
	spec, err := FindSpec(h.g, view)
	if err != nil {
		h.fail(w, r, fmt.Errorf("%w %q", ErrUnknownView, view))
		return
	}
	params, err := Params(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if byBytes {
		if !params.Has("key_base64") {
			noKeyRoute(w, r)
			return
		}
		if key, err = decodeKey("key_base64", params.Get("key_base64")); err != nil {
			h.fail(w, r, err)
			return
		}
		params.Del("key_base64")
	}
	if spec.Kind == WindowedKeyed {
		h.windowKey(w, r, view, key, params)
		return
	}
	if spec.Kind != Keyed {
		WriteError(w, http.StatusBadRequest, fmt.Sprintf("view %q is %s: it has no keys", view, map[Kind]string{Aggregate: "an aggregate", Windowed: "windowed"}[spec.Kind]))
		return
	}
	o, err := ParseReadOptions(params)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(params) > 0 {
		WriteError(w, http.StatusBadRequest, "a key lookup takes no query parameters but consistency, min_offsets and timeout")
		return
	}
	res, err := EvaluateRead(r.Context(), h.g, Request{View: view, Op: OpKey, Key: key}, o)
	if errors.Is(err, ErrNotFound) && len(res.Freshness) > 0 {
		// Not found as of the fragment's offsets: say which (a fragment
		// restored or answering from a standby's copy is behind what the
		// answers before it showed).
		WriteJSON(w, http.StatusNotFound, notFoundAnswer{Error: fmt.Errorf("%w: key %q in view %q", ErrNotFound, key, view).Error(),
			View: view, Key: key, KeyBase64: keyBase64(key), Stale: res.Stale(), Cut: cutOf(res), Freshness: res.Freshness})
		return
	}
	if errors.Is(err, ErrNotFound) {
		err = fmt.Errorf("%w: key %q in view %q", ErrNotFound, key, view)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// The key as the view prints it (an int key asked as "07" is "7"), as
	// its listings name it.
	if k := res.Entries[0].Key; k != "" {
		key = k
	}
	WriteJSON(w, http.StatusOK, keyAnswer{View: view, Key: key, KeyBase64: keyBase64(key), Value: res.Entries[0].Value, Freshness: res.Freshness, Complete: res.Complete(), Stale: res.Stale(), Cut: cutOf(res)})
}

// MinWatchInterval is the shortest interval a watch may ask for: every
// interval costs one evaluation of the view (shared by its watchers).
const MinWatchInterval = 250 * time.Millisecond

// watch streams the view's answer as server-sent events: a "snapshot"
// first, then, at every interval in which the answer changed, a "value"
// (aggregates) or a "changes" event with the entries that changed or
// appeared and the keys that left the answer. While fragments move to
// another node it sends "unavailable" events and goes on.
//
// Watchers of the same view, parameters and interval share one evaluation
// per interval (watch.go); each diffs against what it last sent.
func (h *handler) watch(w http.ResponseWriter, r *http.Request) {
	// The view first: a watch of an unknown view is a 404 whatever its
	// parameters, as a query of one is.
	req, o, err := h.request(r, "interval")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	params, _ := Params(r) // request read them
	if o.Consistency != Latest || o.MinOffsets != nil || params.Has("timeout") {
		h.fail(w, r, fmt.Errorf("%w: a watch takes no consistency, min_offsets or timeout: it follows the latest answer", ErrBadRequest))
		return
	}
	interval := time.Second
	if params.Has("interval") {
		s := params.Get("interval")
		d, err := time.ParseDuration(s)
		if err != nil || d < MinWatchInterval || d > time.Minute {
			WriteError(w, http.StatusBadRequest, fmt.Sprintf("interval must be a duration in [%v, 1m], got %q", MinWatchInterval, s))
			return
		}
		interval = d
	}
	if _, ok := w.(http.Flusher); !ok {
		WriteError(w, http.StatusInternalServerError, "streaming is not supported by this connection")
		return
	}
	if streamHead(w, r) {
		return // before it subscribes: a HEAD needs no answer computed
	}
	sub, first := h.hub.subscribe(r.Context(), req, interval)
	if sub == nil {
		return // the client left
	}
	defer h.hub.unsubscribe(sub)
	if first.err != nil {
		h.fail(w, r, first.err)
		return
	}
	startEvents(w)
	// The group's goroutine writes the events after the snapshot (see
	// watchHub); unsubscribe waits for a write in progress, so none comes
	// after this handler returns.
	rc := http.NewResponseController(w)
	write := func(b []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout(len(b))))
		if _, err := w.Write(b); err != nil {
			return err
		}
		if err := rc.Flush(); err != nil {
			return err
		}
		// No deadline left behind for what the connection does next (a
		// writer that cannot set one never had one).
		_ = rc.SetWriteDeadline(time.Time{})
		return nil
	}
	// The snapshot, written by this goroutine, may take as long as the
	// client wants.
	if _, err := w.Write(sseEvent("snapshot", watchPayload(first.res))); err != nil || rc.Flush() != nil {
		return
	}
	h.hub.start(sub, first, write)
	select {
	case <-r.Context().Done():
	case <-h.cfg.Done:
	case <-sub.ended:
	}
}

// changeEvent is the server-sent event that takes a watcher from the
// answer whose snapshot is last to u's, or nil if nothing changed: a
// "value" (aggregates) or "changes" with the entries or windows that
// changed or appeared and those that left.
func changeEvent(last map[string][]byte, u *watchUpdate) []byte {
	res, cur := u.res, u.snap
	var event string
	var v any
	switch res.Spec.Kind {
	case Windowed:
		changed, removed := diffWindows(last, cur, res.Windows)
		if len(changed) == 0 && len(removed) == 0 {
			return nil
		}
		event, v = "changes", map[string]any{"windows": changed, "removed": removed, "freshness": res.Freshness, "cut": cutOf(res)}
	case WindowedKeyed:
		changed, removed := diffKeyedWindows(last, cur, res.KeyedWindows)
		if len(changed) == 0 && len(removed) == 0 {
			return nil
		}
		event, v = "changes", map[string]any{"windows": changed, "removed": removed, "freshness": res.Freshness, "cut": cutOf(res)}
	case Aggregate:
		if bytes.Equal(cur[""], last[""]) {
			return nil
		}
		event, v = "value", watchPayload(res)
	default:
		changed, removed := diff(last, cur, res.Entries)
		if len(changed) == 0 && len(removed) == 0 {
			return nil
		}
		return changesEvent(changed, removed, res)
	}
	b, _ := json.Marshal(v)
	return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", event, b)
}

// jsonEntry is an entry of a watch's events, as writeEntry writes one.
type jsonEntry struct {
	Key       string `json:"key"`
	KeyBase64 string `json:"key_base64,omitempty"` // the key's bytes, if it is not valid UTF-8
	Value     any    `json:"value"`
}

func newJSONEntry(e Entry) jsonEntry {
	return jsonEntry{Key: e.Key, KeyBase64: keyBase64(e.Key), Value: e.Value}
}

func watchPayload(res Result) any {
	switch res.Spec.Kind {
	case Aggregate:
		return aggregateAnswer(res)
	case Windowed:
		return windowedAnswer(res)
	case WindowedKeyed:
		return keyedWindowsJSON(res)
	}
	es := make([]jsonEntry, len(res.Entries))
	for i, e := range res.Entries {
		es[i] = newJSONEntry(e)
	}
	return map[string]any{"view": res.Spec.Name, "entries": es, "freshness": res.Freshness, "cut": cutOf(res)}
}

// snapshot maps keys ("" for an aggregate) to their encoded values.
func snapshot(res Result) map[string][]byte {
	if res.Spec.Kind == WindowedKeyed {
		m := make(map[string][]byte, len(res.KeyedWindows))
		for _, kw := range res.KeyedWindows {
			m[kw.Start.Format(time.RFC3339Nano)] = keyedWindowJSON(kw)
		}
		return m
	}
	if res.Spec.Kind == Windowed {
		m := make(map[string][]byte, len(res.Windows))
		for _, w := range res.Windows {
			m[w.Start.Format(time.RFC3339Nano)], _ = json.Marshal(w)
		}
		return m
	}
	if res.Spec.Kind == Aggregate {
		b, _ := json.Marshal(res.Value)
		return map[string][]byte{"": b}
	}
	m := make(map[string][]byte, len(res.Entries))
	for _, e := range res.Entries {
		m[e.Key], _ = json.Marshal(e.Value)
	}
	return m
}

func diff(old, cur map[string][]byte, entries []Entry) (changed []jsonEntry, removed []string) {
	changed, removed = []jsonEntry{}, []string{}
	for _, e := range entries {
		if o, ok := old[e.Key]; !ok || !bytes.Equal(o, cur[e.Key]) {
			changed = append(changed, newJSONEntry(e))
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			removed = append(removed, k)
		}
	}
	slices.Sort(removed)
	return changed, removed
}

// diffWindows is diff for windowed answers: windows are keyed by start.
func diffWindows(old, cur map[string][]byte, windows []Window) (changed []Window, removed []string) {
	changed, removed = []Window{}, []string{}
	for _, w := range windows {
		k := w.Start.Format(time.RFC3339Nano)
		if o, ok := old[k]; !ok || !bytes.Equal(o, cur[k]) {
			changed = append(changed, w)
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			removed = append(removed, k)
		}
	}
	slices.Sort(removed)
	return changed, removed
}

// StartEvents begins a server-sent event stream: it answers 500 (and
// returns false) when the connection cannot stream, answers a HEAD with
// the stream's headers alone (and returns false: see streamHead), else
// writes the stream's headers and returns the flusher that pushes each
// event out.
func StartEvents(w http.ResponseWriter, r *http.Request) (http.Flusher, bool) {
	fl, ok := w.(http.Flusher)
	if !ok {
		WriteError(w, http.StatusInternalServerError, "streaming is not supported by this connection")
		return nil, false
	}
	if streamHead(w, r) {
		return nil, false
	}
	startEvents(w)
	return fl, true
}

// streamHead answers a HEAD request of a stream with the stream's headers
// alone, and reports whether r was one. The mux routes HEAD to a GET
// route, and the writes of a HEAD answer's body are dropped without an
// error: a stream's handler would run on, and hold the connection, until
// the client went.
func streamHead(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodHead {
		return false
	}
	startEvents(w)
	return true
}

func startEvents(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
}
