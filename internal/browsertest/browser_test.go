package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/chromedp/chromedp"

	"github.com/tessera-streams/tessera/internal/exampletest"
)

func TestMain(m *testing.M) { exampletest.Main(m) }

// chromium finds the browser; without one the test fails under CI and
// skips elsewhere, saying what is missing.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("TESSERA_CHROMIUM"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const why = "no Chromium found: the browser tests need the Debian package chromium (apt-get install -y chromium; .ci/run installs it) or TESSERA_CHROMIUM naming a Chromium binary"
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why + " (under CI this fails)")
	return ""
}

// build compiles the example at ../../examples/name, once per run.
func build(t *testing.T, name string) string {
	t.Helper()
	return exampletest.BuildDir(t, "../../examples/"+name, name)
}

// page is a tab of a headless Chromium started for one test.
type page struct {
	t   *testing.T
	ctx context.Context

	mu         sync.Mutex
	exceptions []string
}

// open starts Chromium with the flags this machine needs and a fresh
// profile, and loads url. Uncaught exceptions of the page fail the test.
func open(t *testing.T, url string) *page {
	t.Helper()
	exe := chromium(t)
	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1000))
	ctx, cancel := chromedp.NewContext(actx)
	p := &page{t: t, ctx: ctx}
	console := chromedp.Console(ctx) // starts the browser
	var wg sync.WaitGroup
	wg.Go(func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.IsException() {
				p.mu.Lock()
				p.exceptions = append(p.exceptions, m.String())
				p.mu.Unlock()
			} else if m.Type == chromedp.ConsoleError {
				t.Logf("page console: %s", m)
			}
		}
	})
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		chromedp.Cancel(cctx)
		cancel()
		acancel()
		wg.Wait()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range p.exceptions {
			t.Errorf("the page threw: %s", e)
		}
	})
	p.load(url)
	return p
}

// load navigates the tab to url.
func (p *page) load(url string) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, chromedp.Navigate(url)); err != nil {
		p.t.Fatalf("load %s: %v", url, err)
	}
}

// wait polls the JavaScript expression until it is truthy and returns its
// value; after timeout the test fails, saying what it waited for and
// taking a screenshot.
func wait[T any](p *page, timeout time.Duration, what, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Poll[T](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		p.shot("failed-" + strings.Map(func(r rune) rune {
			if unicode.IsLetter(r) || unicode.IsDigit(r) {
				return r
			}
			return '-'
		}, what))
		p.t.Fatalf("%s: not within %v: %v", what, timeout, err)
	}
	return v
}

// eval evaluates the JavaScript expression.
func eval[T any](p *page, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// evalAwait evaluates the JavaScript expression and waits for the
// promise it gives.
func evalAwait[T any](p *page, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// shot saves a full-page screenshot as name.png.
func (p *page) shot(name string) {
	p.t.Helper()
	png, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	dir := os.Getenv("TESSERA_SCREENSHOTS")
	if dir == "" {
		dir = p.t.ArtifactDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Errorf("screenshot dir: %v", err)
		return
	}
	path := filepath.Join(dir, fmt.Sprintf("%s.png", name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Errorf("screenshot: %v", err)
		return
	}
	p.t.Logf("screenshot %s (%d KiB)", path, len(png)>>10)
}

// painted counts the pixels drawn on the canvases matched by selector
// (alpha > 0), and those that are blue rather than red.
const paintedJS = `((sel) => {
	let all = 0, blue = 0;
	for (const c of document.querySelectorAll(sel)) {
		if (!c.width || !c.height) continue;
		const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
		for (let i = 0; i < d.length; i += 4) {
			if (d[i + 3] > 0) { all++; if (d[i + 2] > d[i] + 40) blue++; }
		}
	}
	return {all, blue};
})`

type painted struct{ All, Blue int }
