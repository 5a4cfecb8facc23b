#!/usr/bin/env bash
# Soak: Shunt under continuous lab traffic (new HTTP connections, an iperf3
# stream through the VIP, control-socket changes) for a while, with RSS
# sampled after warm-up and at the end. Memory must stay flat: every table
# and ring is preallocated, so growth means a leak.
#
# Usage: scripts/soak.sh [SECONDS]   (default 300; CI runs a short pass)
# Fails if RSS grows by more than 5% (plus 1 MiB of noise) or traffic fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# The lab namespaces are shared with the lab tests: take their lock.
exec 9>>/run/shunt-lab.lock
flock 9

SECONDS_TOTAL=${1:-300}
SHUNT=${SHUNT:-$PWD/target/release/shunt}
[ -x "$SHUNT" ] || cargo build --release
OUT=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; kill "${iperf_srv:-}" 2>/dev/null || true; "$SHUNT" lab down >/dev/null 2>&1 || true' EXIT

"$SHUNT" lab up >/dev/null
sed -e "s#/run/shunt/control.sock#$OUT/control.sock#" -e "s#/var/lib/shunt/reports#$OUT/reports#" config.toml > "$OUT/soak.toml"
# An iperf3 service on the same VIP, client-affine so both iperf3
# connections land on one backend.
python3 - "$OUT/soak.toml" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
svc = '''[[service]]
name = "iperf"
vip = "10.0.100.1"
port = 5201
protocol = "tcp"
pipeline = "l4lb"
snat_pool = "10.0.3.0/28"
affinity = true
backends = [{ addr = "10.0.2.11", port = 5201 }]

'''
i = s.index("[conntrack]")
open(p, "w").write(s[:i] + svc + s[i:])
PY

ip netns exec shunt "$SHUNT" run --config "$OUT/soak.toml" > "$OUT/shunt.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "Ctrl-C to stop" "$OUT/shunt.log" && break; sleep 0.1; done
ip netns exec shunt-be1 iperf3 -s -p 5201 >/dev/null 2>&1 &
iperf_srv=$!
sleep 0.5

rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
traffic() { # $1 seconds
    local end=$((SECONDS + $1)) fails=0 n=0
    ip netns exec shunt-client iperf3 -c 10.0.100.1 -p 5201 -t "$1" >/dev/null 2>&1 &
    local ip=$!
    while [ $SECONDS -lt $end ]; do
        ip netns exec shunt-client curl -s -m 2 --no-keepalive http://10.0.100.1/ >/dev/null || fails=$((fails + 1))
        n=$((n + 1))
        if [ $((n % 50)) -eq 0 ]; then
            "$SHUNT" backend drain --service web --addr 10.0.2.12 --port 80 --socket "$OUT/control.sock" >/dev/null
            "$SHUNT" backend weight --service web --addr 10.0.2.12 --port 80 --weight 100 --socket "$OUT/control.sock" >/dev/null
        fi
    done
    wait $ip || fails=$((fails + 1))
    echo "$n $fails"
}

warm=$(( SECONDS_TOTAL / 5 )); [ $warm -lt 3 ] && warm=3
echo "soak: warm-up ${warm}s"
traffic "$warm" >/dev/null
before=$(rss)
echo "soak: RSS after warm-up ${before} KiB; running ${SECONDS_TOTAL}s"
read -r requests fails < <(traffic "$SECONDS_TOTAL")
after=$(rss)
kill -INT $pid; wait $pid || true
pid=
growth=$(( after - before ))
limit=$(( before / 20 + 1024 ))
echo "soak: ${requests} HTTP requests (${fails} failed) plus iperf3 for ${SECONDS_TOTAL}s"
echo "soak: RSS ${before} KiB -> ${after} KiB (growth ${growth} KiB, limit ${limit} KiB)"
sed -n '/final counters/,/report/p' "$OUT/shunt.log" | head -8
if [ "$fails" -gt 0 ]; then echo "soak: FAILED: ${fails} requests failed" >&2; exit 1; fi
if [ "$growth" -gt "$limit" ]; then echo "soak: FAILED: memory grew" >&2; exit 1; fi
echo "soak: ok"
