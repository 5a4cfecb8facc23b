#!/usr/bin/env bash
# One command from a fresh machine to Shunt load-balancing real traffic:
# installs packages, builds, brings the lab up, runs Shunt with the default
# config (HTTP VIP over three nginx backends) while curl crosses it, adds an
# iperf3 service at runtime and runs a TCP stream through it, then stops
# Shunt and prints its counters.
#
# SHUNT=/path/to/shunt skips setup and build (the lab test does this).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SHUNT:-}" ]; then
    bash scripts/setup.sh
    cargo build --release
    SHUNT=$PWD/target/release/shunt
fi
"$SHUNT" lab up
"$SHUNT" check --offline --config config.toml

log=$(mktemp)
sock=$(mktemp -u /tmp/shunt-demo-XXXX.sock)
cfg=$(mktemp /tmp/shunt-demo-XXXX.toml)
# The default config with a socket of its own, no metrics listener, no reports.
sed -e "s#/run/shunt/control.sock#$sock#" -e '/^prometheus = /d' -e '/^histogram_dir = /d' config.toml > "$cfg"
ip netns exec shunt "$SHUNT" run --config "$cfg" >"$log" 2>&1 &
pid=$!
iperf_pids=()
trap 'kill $pid "${iperf_pids[@]}" 2>/dev/null || true; rm -f "$cfg"' EXIT
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

echo "== iperf3: a service added at runtime (VIP 10.0.100.1:5201, client affinity), 3 s TCP stream"
for b in 1 2 3; do
    ip netns exec "shunt-be$b" iperf3 -s -p 5201 -1 >/dev/null 2>&1 &
    iperf_pids+=($!)
done
svc=$(mktemp /tmp/shunt-demo-XXXX.toml)
cat > "$svc" <<SERVICE
[[service]]
name = "iperf"
vip = "10.0.100.1"
port = 5201
protocol = "tcp"
pipeline = "l4lb"
snat_pool = "10.0.3.16/28"
affinity = true   # iperf3's control and data connections reach the same server
health = { kind = "none" }   # a one-off iperf3 server (-1) takes any connection, a probe too, as its test
backends = [
  { addr = "10.0.2.11", port = 5201 },
  { addr = "10.0.2.12", port = 5201 },
  { addr = "10.0.2.13", port = 5201 },
]
SERVICE
"$SHUNT" service add --socket "$sock" --file "$svc"
rm -f "$svc"
sleep 0.5
ip netns exec shunt-client iperf3 -c 10.0.100.1 -p 5201 -t 3 -f m | grep -E "sender|receiver"

kill -INT $pid
wait $pid || true
kill "${iperf_pids[@]}" 2>/dev/null || true
trap - EXIT
rm -f "$cfg"
echo "== Shunt's final report"
sed -n '/final counters/,$p' "$log"
