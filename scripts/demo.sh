#!/usr/bin/env bash
# Starts a three-node cluster of an example (EXAMPLE, default wordcount)
# on 127.0.0.1 (HTTP on 8080, 8081, 8082), each node with its own data
# directory under ./data/demo, and stops all three on Ctrl-C. Arguments go
# to every node.
set -euo pipefail
cd "$(dirname "$0")/.."
example="${EXAMPLE:-wordcount}"
go build -o "bin/$example" "./examples/$example"
pids=()
stop() {
  trap - INT TERM
  echo "stopping the cluster..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM
for i in 0 1 2; do
  args=(-node "node$i" -http "127.0.0.1:808$i" -gossip "127.0.0.1:1794$i" -remote "127.0.0.1:1795$i"
        -data "./data/demo/$example/node$i" -expect 3 -log-level warn)
  if [ "$i" != 0 ]; then args+=(-join 127.0.0.1:17940 -progress 0); fi
  "./bin/$example" "${args[@]}" "$@" &
  pids+=($!)
done
wait "${pids[@]}"
