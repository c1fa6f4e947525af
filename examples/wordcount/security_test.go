package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/exampletest"
	"github.com/tessera-streams/tessera/internal/testcert"
)

// Three nodes with HTTPS, bearer tokens, encrypted gossip and mutual TLS
// between them count exactly; every node answers the whole cluster (they
// ask each other over HTTPS with a token). Plain HTTP, a missing token, a
// read token that writes, and a client without a certificate at the
// node-to-node port all fail.
func TestThreeNodesSecured(t *testing.T) {
	t.Parallel()
	const n = 300_000
	bin := exampletest.Build(t, "wordcount")
	certs := testcert.Write(t, "wordcount")
	dir := t.TempDir()
	key := make([]byte, 32)
	rand.Read(key)
	keyFile, tokens := filepath.Join(dir, "gossip.key"), filepath.Join(dir, "tokens")
	const read, admin = "read-token-0123456789", "admin-token-0123456789"
	for p, body := range map[string]string{keyFile: base64.StdEncoding.EncodeToString(key) + "\n",
		tokens: "read " + read + "\nadmin " + admin + "\n"} {
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var remotes []string
	var gossip []string
	for range 3 {
		gossip = append(gossip, exampletest.FreePort(t))
		remotes = append(remotes, exampletest.FreePort(t))
	}
	var procs []*exampletest.Proc
	for i := range 3 {
		args := []string{"-node", fmt.Sprintf("n%d", i), "-http", exampletest.FreePort(t), "-gossip", gossip[i],
			"-remote", remotes[i], "-expect", "3", "-data", t.TempDir(), "-progress", "0", "-log-level", "warn",
			"-events", fmt.Sprint(n), "-seed", "3", "-fragments", "16",
			"-tls-cert", certs.Cert, "-tls-key", certs.Key, "-tls-ca", certs.CA, "-gossip-key", keyFile, "-auth-token-file", tokens}
		if i > 0 {
			args = append(args, "-join", gossip[0])
		}
		procs = append(procs, exampletest.Start(t, bin, args...))
	}
	for _, p := range procs {
		p.WaitURL(t)
		if !strings.HasPrefix(p.Base, "https://") {
			t.Fatalf("node serves %s", p.Base)
		}
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	do := func(method, url, token string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var total struct{ Value int64 }
		if code, b := do("GET", procs[1].Base+"/v1/views/total", read); code == 200 {
			json.Unmarshal(b, &total)
		}
		if total.Value == n {
			break
		}
		if total.Value > n || time.Now().After(deadline) {
			t.Fatalf("total %d, want %d", total.Value, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, b := do("GET", procs[2].Base+"/v1/views/words?limit=10000000", read)
	var es entries
	if err := json.Unmarshal(b, &es); code != 200 || err != nil {
		t.Fatalf("words: %d %v", code, err)
	}
	want := sequentialCounts(n, 4, 3)
	if len(es.Entries) != len(want) {
		t.Fatalf("%d words, want %d", len(es.Entries), len(want))
	}
	for _, e := range es.Entries {
		if want[e.Key] != e.Value {
			t.Fatalf("%s = %d, want %d", e.Key, e.Value, want[e.Key])
		}
	}
	var st struct {
		Members   []struct{ Name, Status string }
		Fragments []struct{ Owner string }
	}
	code, b = do("GET", procs[0].Base+"/v1/cluster", read)
	if err := json.Unmarshal(b, &st); code != 200 || err != nil || len(st.Members) != 3 || len(st.Fragments) != 16 {
		t.Fatalf("cluster: %d %v %s", code, err, b)
	}
	owners := map[string]bool{}
	for _, f := range st.Fragments {
		owners[f.Owner] = true
	}
	if len(owners) != 3 {
		t.Fatalf("fragments on %d nodes, want 3: the nodes did not work together", len(owners))
	}

	if code, _ := do("POST", procs[0].Base+"/v1/streams/lines/events", ""); code != 401 {
		t.Errorf("a write without a token: %d, want 401", code)
	}
	if code, _ := do("POST", procs[0].Base+"/v1/streams/lines/events", read); code != 403 {
		t.Errorf("a write with a read token: %d, want 403", code)
	}
	if code, _ := do("POST", procs[0].Base+"/v1/checkpoint", read); code != 403 {
		t.Errorf("a checkpoint with a read token: %d, want 403", code)
	}
	if code, _ := do("POST", procs[0].Base+"/v1/checkpoint", admin); code != 200 {
		t.Errorf("a checkpoint with an admin token: %d, want 200", code)
	}
	plain := "http://" + strings.TrimPrefix(procs[0].Base, "https://") + "/v1/views/total"
	if resp, err := http.Get(plain); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP to a TLS node answered 200")
		}
	}
	http.DefaultClient.CloseIdleConnections()
	// The node-to-node port wants a client certificate from the CA.
	conn, err := tls.Dial("tcp", remotes[0], &tls.Config{RootCAs: certs.Pool, NextProtos: []string{"h2"}})
	if err == nil {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client without a certificate at the remote port: %v", err)
	}
}
