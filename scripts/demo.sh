#!/usr/bin/env bash
# One command from a fresh machine to Shunt load-balancing real traffic:
# installs packages, builds, brings the lab up, runs Shunt with the default
# config (HTTP VIP over three nginx backends) while curl crosses it, then
# stops it and prints its counters.
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

echo "== 30 HTTP requests to the VIP 10.0.100.1, one connection each (Maglev spread)"
ip netns exec shunt-client bash -c \
    'for i in $(seq 30); do curl -s -m 2 --no-keepalive http://10.0.100.1/; done' | sort | uniq -c
echo "== the same over IPv6: VIP [fd00:100::1]"
ip netns exec shunt-client bash -c \
    'for i in $(seq 6); do curl -s -g -m 2 --no-keepalive "http://[fd00:100::1]/"; done' | sort | uniq -c
echo "== 1 MiB download through full-NAT, checked against the file"
ip netns exec shunt-client curl -s -o /tmp/shunt-demo.bin -w "%{size_download} bytes at %{speed_download} B/s\n" \
    http://10.0.100.1/big.bin
cmp /tmp/shunt-demo.bin /run/shunt-lab/big.bin && echo "intact"
echo "== ping to the shunt namespace itself (not ours: the kernel answers)"
ip netns exec shunt-client ping -c 2 -i 0.2 10.0.1.1

kill -INT $pid
wait $pid || true
trap - EXIT
echo "== Shunt's final report"
sed -n '/final counters/,$p' "$log"
