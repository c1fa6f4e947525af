// Package cluster assembles a node: it runs one flow's engine, serves the
// HTTP API (views, cluster state, health, metrics, and the push streams of
// Config.Streams), and owns every goroutine it starts. A single node is a
// cluster of one; membership (memberlist), remote fragments and failover
// build on this package.
package cluster
