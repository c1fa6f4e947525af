// Package cluster assembles a node: it runs one flow's engine, serves the
// HTTP API (views, cluster state, health, metrics, and the push streams of
// Config.Streams), and owns every goroutine it starts. A single node is a
// cluster of one; membership (memberlist), remote fragments and failover
// build on this package.
//
// The dashboard (dashboard.go, the page and its assets in dashboard/,
// embedded) reads only the /v1/ API: /v1/cluster/watch streams the merged
// cluster state (one evaluation per interval shared by all watchers), and
// /v1/cluster/history serves what a snapshot cannot: throughput and lag
// per source partition over the last samples and a timeline of member
// changes and fragment moves (history.go), in memory bounded per node,
// both merged over the members when asked: an event that several nodes
// recorded (a death each detected, a move each computed) shows once, with
// the nodes that saw it.
// metrics.go exports the Prometheus metrics.
//
// Security (security.go) is opt-in and configured by files: HTTPS for the
// API, bearer tokens with the roles read, write and admin in front of every
// /v1/ route (a guard around the whole mux, so a new route is covered by
// its method and path: GET needs read, POST /v1/streams/... write, any
// other change admin), gossip encrypted with a shared key, and mutual TLS
// between nodes' protoactor remotes. Secrets are never logged and never
// taken from the command line.
package cluster
