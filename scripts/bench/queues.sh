#!/usr/bin/env bash
# Throughput against queues: Shunt's full L4LB pipeline with one queue and
# one worker, then two queues (veth numrxqueues 2) and two workers on cores
# 0 and 1, rounds interleaved (1q 2q 1q 2q …). Load: iperf3 TCP, 8 parallel
# streams through the VIP (RSS spreads them over the queues; SNAT replies
# that land on the other worker are handed over).
#
# Usage: bash scripts/bench/queues.sh [ROUNDS] [SECONDS]   (as root; default 3 rounds, 8 s)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
SECS=${2:-8}
SHUNT=$PWD/target/release/shunt
[ -x "$SHUNT" ] || cargo build --release
OUT=$(mktemp -d)
trap 'pkill -INT -f "shunt run --config $OUT" 2>/dev/null || true; pkill -f "iperf3 -s -p 5201" 2>/dev/null || true; "$SHUNT" lab down >/dev/null 2>&1 || true' EXIT

make_config() { # $1 = queues
    python3 - "$1" "$OUT" <<'PY'
import sys
q, out = int(sys.argv[1]), sys.argv[2]
s = open("config.toml").read()
s = s.replace("/run/shunt/control.sock", f"{out}/control.sock").replace("/var/lib/shunt/reports", f"{out}/reports")
one = '[[worker]]\ncore = 1\nqueues = [{ interface = "sh-cli", queue = 0 }, { interface = "sh-be", queue = 0 }]'
assert one in s
if q == 2:
    s = s.replace(one, '[[worker]]\ncore = 0\nqueues = [{ interface = "sh-cli", queue = 0 }, { interface = "sh-be", queue = 0 }]\n\n'
                       '[[worker]]\ncore = 1\nqueues = [{ interface = "sh-cli", queue = 1 }, { interface = "sh-be", queue = 1 }]')
svc = ('[[service]]\nname = "iperf"\nvip = "10.0.100.1"\nport = 5201\nprotocol = "tcp"\npipeline = "l4lb"\n'
       'snat_pool = "10.0.3.0/28"\naffinity = true\nbackends = [{ addr = "10.0.2.11", port = 5201 }]\n\n')
i = s.index("[conntrack]")
open(f"{out}/q{q}.toml", "w").write(s[:i] + svc + s[i:])
PY
}
make_config 1
make_config 2

results=()
for r in $(seq "$ROUNDS"); do
    for q in 1 2; do
        SHUNT_LAB_QUEUES=$q "$SHUNT" lab up >/dev/null
        ip netns exec shunt "$SHUNT" run --config "$OUT/q$q.toml" >"$OUT/shunt-$r-$q.log" 2>&1 &
        for _ in $(seq 100); do grep -q "Ctrl-C to stop" "$OUT/shunt-$r-$q.log" && break; sleep 0.1; done
        ip netns exec shunt-be1 iperf3 -s -p 5201 -1 >/dev/null 2>&1 &
        sleep 0.5
        gbps=$(ip netns exec shunt-client iperf3 -c 10.0.100.1 -p 5201 -t "$SECS" -P 8 -J 2>/dev/null |
            python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))' || echo 0)
        pkill -INT -f "shunt run --config $OUT/q$q.toml" || true
        sleep 1
        handed=$( { grep -o "handoffs_out=[0-9]*" "$OUT/shunt-$r-$q.log" || true; } | cut -d= -f2 | awk '{s+=$1} END {print s+0}')
        echo "round $r/$ROUNDS: $q queue(s): $gbps Gbit/s (handoffs ${handed:-0})"
        results+=("$q $gbps")
    done
done
printf '%s\n' "${results[@]}" | python3 -c '
import sys, statistics
d = {}
for line in sys.stdin:
    q, g = line.split(); d.setdefault(q, []).append(float(g))
print("| queues / workers | iperf3 -P 8 Gbit/s, median (min–max) |")
print("|---|---|")
for q in sorted(d):
    v = d[q]; print(f"| {q} | {statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f}) |")
if "1" in d and "2" in d:
    ratio = statistics.median(d["2"]) / statistics.median(d["1"])
    print(f"\n2-queue / 1-queue: {ratio:.2f}x")
'
