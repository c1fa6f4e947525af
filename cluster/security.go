package cluster

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strings"

	"github.com/tessera-streams/tessera/splice"
)

// Security is how a node protects its API and its traffic with the other
// nodes. The zero value protects nothing: plain HTTP open to anyone who
// reaches the port, plaintext gossip and node-to-node messages.
//
// Secrets come from files (or the environment variables that name them),
// never from the command line, and are never logged.
type Security struct {
	// TLS serves the HTTP API over HTTPS; nil: plain HTTP.
	TLS *tls.Config
	// Tokens, if set, guard the API: every /v1/ route needs a bearer
	// token of a role that allows it (Role); /healthz, /readyz and
	// /metrics only with ProtectHealth. The dashboard page itself stays
	// open (it holds no data).
	Tokens        *Tokens
	ProtectHealth bool
	// GossipKey encrypts and authenticates gossip (memberlist's keyring,
	// AES-GCM): a node without the key cannot join. 16, 24 or 32 bytes.
	GossipKey []byte
	// RemoteTLS makes node-to-node messages (protoactor remote over gRPC)
	// mutual TLS: each node presents its certificate and verifies the
	// other's against the CA. It serves as both server and client config.
	RemoteTLS *tls.Config
	// PeerCAs verifies the other nodes' HTTPS certificates when this node
	// asks them (GET /v1/cluster); nil: the system's roots.
	PeerCAs *x509.CertPool
}

// Role is what a bearer token may do. Each role may do what the ones
// before it may.
type Role int

const (
	RoleRead  Role = iota + 1 // GET every /v1/ route
	RoleWrite                 // also push events (POST /v1/streams/...)
	RoleAdmin                 // also checkpoints and every other change
)

func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	case RoleAdmin:
		return "admin"
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// Tokens are the bearer tokens a node accepts, with their roles. They are
// kept as SHA-256 hashes: a lookup takes the same time whatever a guess
// shares with a real token.
type Tokens struct {
	roles map[[32]byte]Role
	peer  string // the token a node presents to the others: the strongest in the file
}

// minTokenLen refuses tokens short enough to guess.
const minTokenLen = 16

// ParseTokens reads a token file: one "ROLE TOKEN" per line, ROLE read,
// write or admin; blank lines and lines starting with # are skipped.
// Errors name the line, never the token.
func ParseTokens(r io.Reader) (*Tokens, error) {
	t := &Tokens{roles: map[[32]byte]Role{}}
	var peerRole Role
	sc := bufio.NewScanner(r)
	var errs []error
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) != 2 {
			errs = append(errs, fmt.Errorf("line %d: want \"ROLE TOKEN\", got %d fields", line, len(f)))
			continue
		}
		var role Role
		switch f[0] {
		case "read":
			role = RoleRead
		case "write":
			role = RoleWrite
		case "admin":
			role = RoleAdmin
		default:
			errs = append(errs, fmt.Errorf("line %d: unknown role %q (read, write or admin)", line, f[0]))
			continue
		}
		if len(f[1]) < minTokenLen {
			errs = append(errs, fmt.Errorf("line %d: token shorter than %d characters", line, minTokenLen))
			continue
		}
		h := sha256.Sum256([]byte(f[1]))
		if _, dup := t.roles[h]; dup {
			errs = append(errs, fmt.Errorf("line %d: token listed twice", line))
			continue
		}
		t.roles[h] = role
		if role > peerRole {
			t.peer, peerRole = f[1], role
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 && len(t.roles) == 0 {
		errs = append(errs, errors.New("no token"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	return t, nil
}

// LoadTokens reads the token file at path (see ParseTokens).
func LoadTokens(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	return ParseTokens(f)
}

// Role is the role of token, if it is one.
func (t *Tokens) Role(token string) (Role, bool) {
	r, ok := t.roles[sha256.Sum256([]byte(token))]
	return r, ok
}

// LoadGossipKey reads a gossip key file: the key in standard base64
// (e.g. `head -c 32 /dev/urandom | base64`), 16, 24 or 32 bytes once
// decoded.
func LoadGossipKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip key: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("gossip key %s: not base64", path)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("gossip key %s: %d bytes, want 16, 24 or 32", path, n)
	}
	return key, nil
}

// LoadTLS builds the TLS configurations of a node from PEM files: cert
// and key serve HTTPS; with a CA bundle as well, node-to-node messages use
// mutual TLS with the same certificate (it needs both server and client
// use, and the addresses nodes reach it at), and the node trusts that CA
// when it asks other nodes over HTTPS.
func LoadTLS(certFile, keyFile, caFile string) (httpTLS, remoteTLS *tls.Config, peers *x509.CertPool, err error) {
	if (certFile == "") != (keyFile == "") {
		return nil, nil, nil, errors.New("-tls-cert and -tls-key go together")
	}
	if certFile == "" {
		if caFile != "" {
			return nil, nil, nil, errors.New("-tls-ca needs -tls-cert and -tls-key")
		}
		return nil, nil, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("TLS certificate: %w", err)
	}
	httpTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return httpTLS, nil, nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("TLS CA: %w", err)
	}
	peers = x509.NewCertPool()
	if !peers.AppendCertsFromPEM(pem) {
		return nil, nil, nil, fmt.Errorf("TLS CA %s: no PEM certificate", caFile)
	}
	remoteTLS = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: peers, ClientCAs: peers,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	return httpTLS, remoteTLS, peers, nil
}

// needs is the role a request needs, or 0 if it is open.
func (s *Security) needs(r *http.Request) Role {
	p := path.Clean("/" + r.URL.Path)
	switch {
	case p == "/v1" || strings.HasPrefix(p, "/v1/"):
		switch {
		case r.Method == http.MethodGet || r.Method == http.MethodHead:
			return RoleRead
		case strings.HasPrefix(p, "/v1/streams/"):
			return RoleWrite
		}
		return RoleAdmin
	case p == "/healthz" || p == "/readyz" || p == "/metrics":
		if s.ProtectHealth {
			return RoleRead
		}
	}
	return 0
}

// guard checks bearer tokens in front of next: 401 without a known token,
// 403 with one whose role does not allow the request.
func (s *Security) guard(next http.Handler) http.Handler {
	if s.Tokens == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		need := s.needs(r)
		if need == 0 {
			next.ServeHTTP(w, r)
			return
		}
		auth := r.Header.Get("Authorization")
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tessera"`)
			splice.WriteError(w, http.StatusUnauthorized, "this route needs a bearer token (Authorization: Bearer TOKEN)")
			return
		}
		role, ok := s.Tokens.Role(strings.TrimSpace(token))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tessera", error="invalid_token"`)
			splice.WriteError(w, http.StatusUnauthorized, "unknown token")
			return
		}
		if role < need {
			splice.WriteError(w, http.StatusForbidden, fmt.Sprintf("%s %s needs the %s role; the token has %s", r.Method, r.URL.Path, need, role))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// peerClient is the HTTP client a node asks the other nodes with: it
// trusts their CA and presents the strongest token it has.
func (s *Security) peerClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if s.PeerCAs != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: s.PeerCAs, MinVersion: tls.VersionTLS12}
	}
	var token string
	if s.Tokens != nil {
		token = s.Tokens.peer
	}
	return &http.Client{Transport: bearer{token: token, next: tr}}
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.token != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.next.RoundTrip(r)
}

func (s *Security) scheme() string {
	if s.TLS != nil {
		return "https"
	}
	return "http"
}
