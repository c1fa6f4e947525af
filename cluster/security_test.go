package cluster

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/internal/testcert"
)

const (
	readToken  = "read-0123456789abcdef"
	writeToken = "write-0123456789abcdef"
	adminToken = "admin-0123456789abcdef"
)

func tokenFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens")
	body := "# role token\nread " + readToken + "\n\nwrite " + writeToken + "\nadmin " + adminToken + "\n"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseTokens(t *testing.T) {
	tok, err := ParseTokens(strings.NewReader("read " + readToken + "\nadmin " + adminToken + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := tok.Role(readToken); !ok || r != RoleRead {
		t.Fatalf("read token: %v %v", r, ok)
	}
	if _, ok := tok.Role(readToken[:len(readToken)-1]); ok {
		t.Fatal("a prefix of a token is accepted")
	}
	if tok.peer != adminToken {
		t.Fatal("nodes do not ask each other with the strongest token")
	}
	secret := "s3cr3t-s3cr3t-s3cr3t"
	for _, bad := range []string{"", "# nothing\n", "owner " + secret, "read short", "read " + secret + "\nadmin " + secret, "read " + secret + " extra"} {
		_, err := ParseTokens(strings.NewReader(bad))
		if err == nil {
			t.Errorf("%q accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows the token: %v", err)
		}
	}
}

// request sends method path with token (none if empty) and returns the
// status and the JSON error, if any.
func request(t *testing.T, c *http.Client, method, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(`{"word":"x"}`+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e struct{ Error string }
	json.Unmarshal(body, &e)
	if resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("%s %s: 401 without WWW-Authenticate", method, url)
	}
	return resp.StatusCode, e.Error
}

// With TLS and a token file, every /v1/ route needs a token whose role
// allows it; health and metrics stay open; plain HTTP gets nowhere.
func TestTokensAndTLS(t *testing.T) {
	files := testcert.Write(t, "tessera")
	f := Flags{TLSCert: files.Cert, TLSKey: files.Key, AuthTokenFile: tokenFile(t)}
	sec, err := f.Security()
	if err != nil {
		t.Fatal(err)
	}
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 1, Events: 100}, word)
	r := start(t, Config{Flow: testFlow(src), Name: "n1", Security: sec})
	if !strings.HasPrefix(r.n.URL(), "https://") {
		t.Fatalf("URL %s", r.n.URL())
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: files.Pool}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	base := r.n.URL()
	for _, tc := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/v1/views/total", "", 401},
		{"GET", "/v1/views/total", "not-a-token-at-all", 401},
		{"GET", "/v1/views/total", readToken, 200},
		{"GET", "/v1/cluster", writeToken, 200},
		{"GET", "/v1/deadletters", adminToken, 200},
		{"POST", "/v1/checkpoint", "", 401},
		{"POST", "/v1/checkpoint", readToken, 403},
		{"POST", "/v1/checkpoint", writeToken, 403},
		{"POST", "/v1/checkpoint", adminToken, 200},
		{"POST", "/v1/streams/words/events", "", 401},
		{"POST", "/v1/streams/words/events", readToken, 403},
		{"POST", "/v1//checkpoint", readToken, 403}, // an unclean path is judged cleaned
		{"GET", "/healthz", "", 200},
		{"GET", "/metrics", "", 200},
		{"GET", "/", "", 200},
		{"GET", "/dashboard/app.js", "", 200}, // the page and its assets hold no data
		{"GET", "/v1/cluster/history", "", 401},
		{"GET", "/v1/cluster/watch?interval=bad", readToken, 400},
	} {
		code, msg := request(t, c, tc.method, base+tc.path, tc.token)
		if code != tc.want || (code >= 400 && msg == "") {
			t.Errorf("%s %s with %q: %d %q, want %d with a JSON error", tc.method, tc.path, tc.token, code, msg, tc.want)
		}
	}
	// A write token gets past the guard to the route (none here).
	if code, _ := request(t, c, "POST", base+"/v1/streams/words/events", writeToken); code == 401 || code == 403 {
		t.Errorf("a write token may not push: %d", code)
	}
	// Plain HTTP to the HTTPS port.
	resp, err := http.Get("http://" + r.n.Addr() + "/v1/views/total")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered 200")
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestProtectHealth(t *testing.T) {
	tok, err := ParseTokens(strings.NewReader("read " + readToken))
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	for _, protect := range []bool{false, true} {
		s := Security{Tokens: tok, ProtectHealth: protect}
		for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
			rec := httptest.NewRecorder()
			s.guard(ok).ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
			if want := map[bool]int{false: 200, true: 401}[protect]; rec.Code != want {
				t.Errorf("protect=%v %s: %d, want %d", protect, p, rec.Code, want)
			}
		}
	}
}
