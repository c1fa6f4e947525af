package browsertest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/exampletest"
)

// The dashboard of a three-node word-count cluster, in Chromium: the
// members and their fragments, a chart and a view table with numbers that
// move; a node killed with SIGKILL shows on the page within 3 s, and the
// failover of its fragments in the timeline.
func TestDashboardThreeNodes(t *testing.T) {
	t.Parallel()
	chromium(t) // before building and starting anything
	bin := build(t, "wordcount")
	procs := exampletest.StartCluster(t, bin, []string{"-rate", "20000", "-fragments", "16", "-checkpoint-interval", "250ms",
		"-progress", "0", "-log-level", "warn"}, []string{t.TempDir(), t.TempDir(), t.TempDir()})
	p := open(t, procs[0].Base+"/")

	// Any node answers for every member's dead letters (none here).
	var dl struct{ Nodes map[string]int64 }
	for deadline := time.Now().Add(30 * time.Second); len(dl.Nodes) < 3; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("dead letters of the cluster from %d nodes: %v", len(dl.Nodes), dl.Nodes)
		}
		exampletest.TryJSON(procs[0].Base+"/v1/deadletters?scope=cluster", &dl)
	}

	// Members: three, alive, owning the 16 fragments between them, each
	// with standby copies.
	names := wait[string](p, 60*time.Second, "three live members own every fragment", `(() => {
		const ms = [...document.querySelectorAll('#members .member')];
		const own = document.querySelectorAll('#members .chip.own').length;
		const standby = document.querySelectorAll('#members .chip.standby').length;
		return ms.length === 3 && ms.every(m => m.querySelector('.status').textContent === 'alive') && own === 16 && standby === 16 &&
			document.getElementById('members').dataset.moving === '0' && ms.map(m => m.dataset.name).join(',');
	})()`)
	if names != "n0,n1,n2" {
		t.Fatalf("members %q", names)
	}

	// A chart: the throughput line over several live updates, drawn.
	points := wait[int](p, 30*time.Second, "the throughput chart has points", `(() => {
		const n = +(document.getElementById('chart-throughput').dataset.points || 0);
		return document.querySelector('#chart-throughput canvas') && n >= 3 && n;
	})()`)
	drawn := eval[painted](p, paintedJS+`('#chart-throughput canvas')`)
	if drawn.All < 500 {
		t.Fatalf("the throughput chart has %d points but %d painted pixels", points, drawn.All)
	}
	rate := wait[float64](p, 30*time.Second, "the summary shows events/s", `(() => {
		const m = document.getElementById('summary').textContent.match(/([\d,]+) events\/s/);
		const v = m ? +m[1].replace(/,/g, '') : 0;
		return v > 0 && v;
	})()`)

	// A view table: the top words of the keyed view, with counts that grow.
	first := wait[float64](p, 30*time.Second, "the view table shows the top words", `(() => {
		const rows = [...document.querySelectorAll('#ex-table tbody tr')];
		const v = rows.length >= 5 && +rows[0].cells[1].textContent;
		return document.getElementById('explorer').dataset.view === 'words' && v > 0 && v;
	})()`)
	grown := wait[float64](p, 30*time.Second, "the top count grows", fmt.Sprintf(`(() => {
		const r = document.querySelector('#ex-table tbody tr');
		const v = r && +r.cells[1].textContent;
		return v > %v && v;
	})()`, first))
	// Pages of a prefix search (every word): the next page starts after
	// the first one's last key, and the previous one is the first again.
	const pageKeys = `[...document.querySelectorAll('#ex-table tbody tr')].map(r => r.cells[0].textContent)`
	const click = `((text) => { const b = [...document.querySelectorAll('#ex-controls button, #ex-paging button')].find(b => b.textContent === text); return b ? (b.click(), true) : false; })`
	wait[bool](p, 10*time.Second, "a prefix search", click+`('search prefix')`)
	page1 := wait[[]string](p, 30*time.Second, "the first page of words", `(() => {
		const ks = `+pageKeys+`;
		return document.getElementById('ex-paging').textContent.startsWith('page 1') && ks.length === 20 && ks;
	})()`)
	wait[bool](p, 10*time.Second, "a next button", click+`('next →')`)
	page2 := wait[[]string](p, 30*time.Second, "the second page of words", `(() => {
		const ks = `+pageKeys+`;
		return document.getElementById('ex-paging').textContent.startsWith('page 2') && ks.length > 0 && ks;
	})()`)
	if page2[0] <= page1[len(page1)-1] {
		t.Fatalf("page 2 starts at %q, not after page 1's last key %q", page2[0], page1[len(page1)-1])
	}
	wait[bool](p, 10*time.Second, "a previous button", click+`('← previous')`)
	wait[bool](p, 30*time.Second, "the first page again", `document.getElementById('ex-paging').textContent.startsWith('page 1') && `+
		pageKeys+`[0] === `+strconv.Quote(page1[0]))
	// A key that is not valid UTF-8 is shown Go-quoted from its bytes, and
	// the page after it asks for them. The words are all valid UTF-8: the
	// page's own functions are given such answers.
	keys := eval[[]string](p, `[keyText({key: '\ufffd\u0001', key_base64: '/wE='}), keyText({key: 'a\ufffd\ufffd"', key_base64: 'YcOp/yI='}),
		keyText({key: 'w0001'}), afterParam({next_after: '\ufffd', next_after_base64: '/w+='}), afterParam({next_after: 'w 1'})]`)
	if want := []string{`"\xff\x01"`, `"aé\xff\""`, "w0001", "after_base64=%2Fw%2B%3D", "after=w%201"}; strings.Join(keys, "|") != strings.Join(want, "|") {
		t.Fatalf("keys shown %q, want %q", keys, want)
	}
	// A key is asked for by its bytes: the key ".." in a path would be
	// resolved away by the browser, and the view's listing answered.
	urls := eval[[]string](p, `[keyURL('/v1/views/words', '..'), keyURL('/v1/views/words', 'é/')]`)
	if want := []string{"/v1/views/words/keys?key_base64=Li4%3D", "/v1/views/words/keys?key_base64=w6kv"}; strings.Join(urls, "|") != strings.Join(want, "|") {
		t.Fatalf("key URLs %q, want %q", urls, want)
	}
	found := evalAwait[string](p, `(async () => {
		const one = await (await fetch(keyURL('/v1/views/words', 'w0001'))).json();
		const dots = await fetch(keyURL('/v1/views/words', '..'));
		return one.key + ' ' + dots.status + ' ' + (await dots.json()).key;
	})()`)
	if found != "w0001 404 .." {
		t.Fatalf("lookups by keyURL answered %q, want w0001 found and the key .. not found", found)
	}
	t.Logf("members %s; %d throughput points, %.0f events/s; top word count %v then %v", names, points, rate, first, grown)
	p.shot("dashboard-three-nodes")

	// The aggregate view: its value over time, from its watch stream.
	wait[bool](p, 30*time.Second, "the total view listed", `(() => { const b = document.querySelector('#views tr[data-view="total"] button'); return b ? (b.click(), true) : false; })()`)
	total := wait[float64](p, 30*time.Second, "the aggregate's value", `(() => {
		const r = document.querySelector('#ex-table tbody tr');
		const v = document.getElementById('explorer').dataset.view === 'total' && r && r.cells[1] && +r.cells[1].textContent;
		return v > 0 && v;
	})()`)
	wait[bool](p, 30*time.Second, "the aggregate's value grows and is charted", fmt.Sprintf(`(() => {
		const r = document.querySelector('#ex-table tbody tr');
		return +r.cells[1].textContent > %v && %s('#ex-chart canvas').all > 200;
	})()`, total, paintedJS))
	p.shot("dashboard-aggregate-view")

	// Kill n2: the page shows it within 3 s, as unreachable (n0 cannot
	// reach it) or died (the membership declared it dead).
	if err := procs[2].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	status := wait[string](p, 3*time.Second, "the killed node shows on the page", `(() => {
		const s = document.querySelector('#members .member[data-name="n2"] .status');
		return s && (s.textContent === 'unreachable' || s.textContent === 'died') && s.textContent;
	})()`)
	t.Logf("n2 shown %s %v after SIGKILL", status, time.Since(killed).Round(time.Millisecond))
	p.shot("dashboard-n2-killed")

	// Its fragments fail over to their standbys: the timeline, merged over
	// the members, says so once, as seen by both survivors; the two others
	// own all 16, and nothing is left moving.
	wait[bool](p, 30*time.Second, "the failover shows in the timeline", `(() => {
		const failover = [...document.querySelectorAll('#timeline li.failover')].some(li => li.textContent.includes('n2 →') &&
			li.textContent.includes('seen by n0, n1'));
		const died = [...document.querySelectorAll('#timeline li.died')].some(li => li.textContent.includes('n2 died'));
		const alive = [...document.querySelectorAll('#members .member')].filter(m => m.querySelector('.status').textContent === 'alive');
		const own = alive.reduce((n, m) => n + m.querySelectorAll('.chip.own').length, 0);
		return failover && died && alive.length === 2 && own === 16;
	})()`)
	wait[bool](p, 30*time.Second, "the fragments run again", `document.getElementById('members').dataset.moving === '0'`)
	p.shot("dashboard-after-failover")
}

// With tokens required, the page says what it needs, refuses an unknown
// token, and works with a read token.
func TestDashboardAsksForAToken(t *testing.T) {
	t.Parallel()
	chromium(t)
	bin := build(t, "wordcount")
	tokens := filepath.Join(t.TempDir(), "tokens")
	const readToken = "read-token-for-the-page-0123456789"
	if err := os.WriteFile(tokens, []byte("read "+readToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := exampletest.Spawn(t, bin, "-rate", "5000", "-progress", "0", "-log-level", "warn", "-http", exampletest.FreePort(t),
		"-auth-token-file", tokens)
	p := open(t, proc.Base+"/")
	const asks = `!document.getElementById('auth').hidden && document.getElementById('auth-why').textContent`
	if why := wait[string](p, 30*time.Second, "the page asks for a token", asks); !strings.Contains(why, "read role") {
		t.Fatalf("the page says %q", why)
	}
	p.shot("dashboard-asks-for-a-token")
	submit := func(token string) {
		eval[bool](p, fmt.Sprintf(`(() => { document.getElementById('auth-token').value = %q; document.getElementById('auth-form').requestSubmit(); return true; })()`, token))
	}
	submit("not-a-token-of-this-node-000000")
	if why := wait[string](p, 30*time.Second, "the page refuses an unknown token", asks+` && document.getElementById('auth-why').textContent.includes('unknown') && document.getElementById('auth-why').textContent`); why == "" {
		t.Fatal("no reason given")
	}
	submit(readToken)
	wait[bool](p, 30*time.Second, "the page works with a read token", `document.getElementById('auth').hidden &&
		document.querySelectorAll('#members .member').length === 1 && +(document.body.dataset.updates || 0) >= 2 &&
		document.querySelectorAll('#ex-table tbody tr').length >= 5`)
	p.shot("dashboard-with-a-token")
}
