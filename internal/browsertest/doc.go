// Package browsertest holds the tests that drive pages in a real headless
// Chromium (github.com/chromedp/chromedp, a dependency of these tests only):
// the dashboard every node serves at / against a three-node cluster on
// 127.0.0.1, and the /transport page of examples/transport.
//
// They need the Debian package chromium (or TESSERA_CHROMIUM naming a
// Chromium binary). Without it they fail under CI (CI set) and skip, with
// the reason, elsewhere. Screenshots go to TESSERA_SCREENSHOTS if set,
// else to the test's artifact directory (go test -artifacts -outputdir
// DIR keeps them).
//
// The tests run in parallel, each with its own Chromium, example processes
// and ports: they mostly wait for pages and clusters to move, and one's
// build or run uses the cores while another waits.
package browsertest
