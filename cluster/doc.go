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
// Every request the API cannot take is answered with a JSON error
// ({"error": "..."}) and its status, never a redirect or a plain-text
// page: a path with an empty, . or .. segment is a 400 (http.ServeMux
// would redirect it to its clean form, another route: /keys/.. of a
// key's lookup is the view's listing; a key . or .. is escaped %2E), an
// unknown route or dashboard file a 404, a method a route does not take
// a 405 with Allow (node.go, dashboard.go). What net/http answers before
// any handler runs stays its own: a path that is not valid %-escaping,
// and a request head over 1 MiB.
//
// Quorum (quorum.go, follow in placement.go). A node owns fragments only
// while a majority of the last agreed membership — the members of the
// last placement it applied, kept in DataDir/membership.json across
// restarts — heard it lately, by shard.Majority, the rule the simulation
// (package sim) runs too: more than half of those members, or exactly
// half holding the lowest-ordered one (of an even split, one half goes on
// and the other stops, without a word between them). A member counts
// while this node had a round trip with it within the lease (a join, an
// ack of this node's memberlist probe, or the echo of a heartbeat sent
// within the lease, however late it came back: Membership.Heard,
// roundtrip.go; memberlist's probe alone counts only acks within its
// 100 ms timeout, and a loaded machine fenced itself), not while
// memberlist merely lists it: an isolated node is slow to declare the
// others dead (memberlist's suspicion timeout grows without
// confirmations from others), and one cut off one way never does. A
// majority that sees a member die waits the lease before it places
// without it, so the member stopped first. A node that loses its
// majority stops every fragment and reader at once, without a final
// checkpoint or a hand-off (actor.Engine.Fence), places nothing, and
// reports "fenced" in GET /v1/cluster and its history; when a majority
// hears it again it applies the others' placement, and every fragment it
// is given waits for its owner's hand-off; if the cluster placed nothing
// newer meanwhile (no membership change: a loaded machine whose round
// trips overran the lease, maybe on every node at once), nobody else can
// own its fragments, and it starts them again from its own checkpoints
// (actor.Engine.Resume) — once it has seen the same members and epoch for
// shard.DefaultFollow.Resume (3 s), and only if it did not learn meanwhile
// that the others declared it dead (then their join of it brings a newer
// placement). That is a time bound on gossip, not a proof: a newer epoch
// that took longer to arrive would let it resume beside an owner of that
// epoch until the next placement. When to place, fence and resume is the
// rule of shard.Follower, which the simulation's nodes follow too (package
// sim). A restarted node waits in
// settle until it sees a majority of the membership it kept. A node
// started with seeds (Config.Join) that knows of no placement, its own or
// a peer's, waits in settle until it sees a member that began the cluster
// (started with none: wire.Meta.founder): new nodes that found only each
// other, every member of the cluster down, would otherwise place over
// themselves and start every fragment anew beside a history that is only
// down (sim visits seed 6345). The two
// sides of a partition therefore never both own a fragment and release
// outputs that fragments downstream apply (two lineages that meet at the
// heal). The price is availability: a side without a majority processes
// nothing — a minority, the half of an even split without the lowest
// member, a pair that lost its lowest member (two nodes survive the loss
// of the second, not of the first), the last nodes after more than half
// died at once — and its views stand still until the others are back; a
// cluster of three survives the loss of any one node. Failover after a
// death waits the lease (1.6 s for three members) on top of detection;
// a node whose probes go unanswered for a lease (a stalled process, a
// saturated link) stops owning and takes its fragments back by hand-off.
// The alternative, every side going on and reconciling later, cannot be
// made exact once downstream fragments applied both sides' outputs. The
// alert log is fenced with the fragments (recovery.AlertLog.Fence): an
// alert owner cut off together with its standby (two of five) would
// otherwise commit a step the new owner on the majority side evaluates
// again, and the crossing would be raised on both sides.
//
// Each node gossips the last placement it applied (its epoch and members,
// Membership.SetAgreed) and counts against the newest agreed membership it
// knows of, its own or a peer's, as the simulation's nodes do: a node that
// missed placements while cut off or stopped does not count against
// members the others no longer count (newestAgreed).
//
// A majority of the newest agreed membership is not always enough: the
// members a placement added, or those cut off as it was applied, may not
// have heard what was settled before it (sim visits seed 22890: a node
// that joined a lone survivor, then was cut off from it, was a majority
// of the two alone, and started the survivor's fragments from nothing).
// The agreed membership therefore carries the ones before it
// (shard.Agreement), and a side also needs a majority of those, down to
// one that a member of the side caught up with (shard.Agreement.Quorum,
// Raft's joint consensus in the form a membership change takes here).
// Every engine tells every member all it knows of settled checkpoints
// once it applies a placement, and again every second to those that
// gossip they have not caught up (actor.Engine.Retell; a member whose
// remote did not answer when the placement was applied is told once a
// probe, each second too, finds it answering); a node whose
// reporters hold majorities of the memberships before, down to one that
// one of them caught up with, has caught up (shard.CatchUp,
// actor.Engine.CaughtUp), keeps that with the agreed membership
// (agreed.Caught) and gossips it (wire.Meta.caught). A membership.json
// kept before this carries no memberships before, and counts a majority
// of its members alone, as before. The rule holds once every member runs
// this version: an older one sends no reports, and answers an owner's
// Known after it applied a newer placement. A restarted node waits in
// settle for a majority of the newer of what it kept and what its peers
// gossip. A node's epoch bump after a join or a leave passes
// the placements its members applied as well as the epochs they announce:
// the member that announced an applied placement's epoch may have
// restarted since with a smaller one.
//
// Not covered: a member that leaves while cut off from the others stays
// in their agreed membership; only an operator could take it out, and no
// command does yet.
//
// Security (security.go) is opt-in and configured by files: HTTPS for the
// API, bearer tokens with the roles read, write and admin in front of every
// /v1/ route (a guard around the whole mux, so a new route is covered by
// its method and path: GET needs read, POST /v1/streams/... write, any
// other change admin), gossip encrypted with a shared key, and mutual TLS
// between nodes' protoactor remotes. Secrets are never logged and never
// taken from the command line.
package cluster
