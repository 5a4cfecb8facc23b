#!/usr/bin/env bash
# One command from a fresh machine to Shunt forwarding real traffic:
# installs packages, builds, brings the lab up, runs Shunt with the default
# config while ping, UDP and a TCP stream (iperf3) cross it, then stops it
# and prints its counters.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release
SHUNT=$PWD/target/release/shunt
"$SHUNT" lab up
"$SHUNT" check --offline --config config.toml

log=$(mktemp)
ip netns exec shunt "$SHUNT" run --config config.toml >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "Ctrl-C to stop" "$log" && break; sleep 0.1; done
cat "$log"

echo "== ping client → backend 1 through Shunt"
ip netns exec shunt-client ping -c 5 -i 0.2 10.0.2.11
echo "== iperf3 TCP client → backend 1 through Shunt (5 s)"
ip netns exec shunt-be1 iperf3 -s -1 -B 10.0.2.11 >/dev/null 2>&1 &
sleep 0.5
ip netns exec shunt-client iperf3 -c 10.0.2.11 -t 5 -f m | tail -4
echo "== ping to the shunt namespace itself (not ours: the kernel answers)"
ip netns exec shunt-client ping -c 2 -i 0.2 10.0.1.1

kill -INT $pid
wait $pid || true
trap - EXIT
echo "== Shunt's final report"
sed -n '/final counters/,$p' "$log"
