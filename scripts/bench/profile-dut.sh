#!/usr/bin/env bash
# Where the DUT core's time goes: drives one case of the lab comparison
# (scripts/bench-vs-dpdk.sh) through each AF_XDP DUT in turn and samples
# the DUT core (CPU 1) with `perf record` in the middle of the measured
# window. Prints, per DUT, the share of the core spent in the DUT's own
# userspace code, in the kernel on the DUT thread's behalf (AF_XDP RX/TX
# syscalls, skb build, veth transmit), in softirq threads, and in XDP
# programs, plus the top kernel symbols. Root; needs perf (apt: linux-perf).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DUTS="shunt-l4lb shunt-l2fwd testpmd"
SIZE=64
FLOWS=256
RECORD=4
ROUNDS=1
OUT="$ROOT/target/bench-profile"
INSTALL=1

usage() {
    cat <<EOF
usage: scripts/bench/profile-dut.sh [options]
  --duts "…"     AF_XDP DUTs to profile (default "$DUTS"); the DUT core is CPU 1
  --size B       UDP frame size (default $SIZE)
  --flows N      flows (default $FLOWS)
  --record S     seconds sampled per DUT (default $RECORD)
  --rounds N     profile every DUT N times, interleaved (default $ROUNDS)
  --out DIR      results (default target/bench-profile): DIR/profile.md, DIR/*.data
  --no-install   skip apt-get (perf, and the bench's own packages)
EOF
}
while [ $# -gt 0 ]; do
    case "$1" in
        --duts) DUTS=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --flows) FLOWS=$2; shift 2 ;;
        --record) RECORD=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "profile: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "profile: run as root" >&2; exit 1; }
if [ "$INSTALL" = 1 ] && ! command -v perf >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
fi
command -v perf >/dev/null || { echo "profile: perf not found (apt-get install linux-perf)" >&2; exit 1; }
mkdir -p "$OUT"
BENCH_ARGS=(--no-tcp --no-scaling --rounds 1 --sizes "$SIZE" --flows "$FLOWS")
[ "$INSTALL" = 1 ] || BENCH_ARGS+=(--no-install)

# The bench's case: DUT start (~1 s), warm-up (2 s), then the measured
# window; record in its middle.
DURATION=$((RECORD + 4))
first=1
for r in $(seq "$ROUNDS"); do
    for d in $DUTS; do
        case "$d" in shunt-*|testpmd) ;; *) echo "profile: $d is not an AF_XDP DUT (no DUT core to sample)" >&2; exit 2 ;; esac
        echo "[profile] round $r/$ROUNDS: $d, $SIZE B, $FLOWS flows, sampling CPU 1 for $RECORD s" >&2
        log="$OUT/r$r-$d.log"
        extra=()
        [ $first = 1 ] || extra=(--no-build)
        bash "$ROOT/scripts/bench-vs-dpdk.sh" "${BENCH_ARGS[@]}" "${extra[@]}" --duration "$DURATION" \
            --duts "$d" --out "$OUT/r$r-$d" > "$log" 2>&1 &
        pid=$!
        for _ in $(seq 1200); do
            grep -q "round 1/1: $d" "$log" 2>/dev/null && break
            kill -0 $pid 2>/dev/null || break
            sleep 0.5
        done
        sleep 5
        perf record -q -C 1 -o "$OUT/r$r-$d.data" -- sleep "$RECORD" 2>/dev/null
        wait $pid || { cat "$log" >&2; exit 1; }
        grep -- "->" "$log" | sed "s/^ */[profile]   /" >&2
        first=0
    done
done

# Summarise: shares of the sampled core, then the top kernel symbols.
python3 - "$OUT" "$SIZE" "$FLOWS" "$ROUNDS" $DUTS > "$OUT/profile.md" <<'EOF'
import subprocess, sys, collections
out, size, flows, rounds, duts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
DUT_THREADS = ("shunt-w", "rte-worker")

def report(path, sort):
    txt = subprocess.run(["perf", "report", "-i", path, "--no-children", "--sort", sort, "-q", "--stdio"],
                         capture_output=True, text=True).stdout
    for line in txt.splitlines():
        parts = line.split()
        if parts and parts[0].endswith("%"):
            yield float(parts[0][:-1]), parts[1:]

print(f"DUT core (CPU 1) profile, {size} B UDP, {flows} flows, {rounds} round(s): "
      "share of samples, median over rounds.\n")
print("| DUT | DUT userspace | kernel, DUT thread (AF_XDP syscalls) | softirq threads | XDP programs | other |")
print("|---|---|---|---|---|---|")
tops = {}
for d in duts:
    shares = collections.defaultdict(list)
    syms = collections.Counter()
    for r in range(1, rounds + 1):
        path = f"{out}/r{r}-{d}.data"
        s = collections.Counter()
        for pct, (comm, dso, *_) in report(path, "comm,dso"):
            dut = comm.startswith(DUT_THREADS)
            if dso.startswith("bpf_prog"):
                s["xdp"] += pct
            elif dut and dso == "[kernel.kallsyms]":
                s["kernel"] += pct
            elif dut:
                s["user"] += pct
            elif comm.startswith("ksoftirqd"):
                s["softirq"] += pct
            else:
                s["other"] += pct
        for k in ("user", "kernel", "softirq", "xdp", "other"):
            shares[k].append(s[k])
        for pct, rest in report(path, "sym"):
            if rest[0] == "[k]":
                syms[rest[1]] += pct / rounds
    med = {k: sorted(v)[len(v) // 2] for k, v in shares.items()}
    print(f"| {d} | {med['user']:.1f} % | {med['kernel']:.1f} % | {med['softirq']:.1f} % | "
          f"{med['xdp']:.1f} % | {med['other']:.1f} % |")
    tops[d] = syms.most_common(10)
print("\nTop kernel symbols (share of all samples, mean over rounds):\n")
print("| rank | " + " | ".join(duts) + " |")
print("|---|" + "---|" * len(duts))
for i in range(10):
    cells = [f"{tops[d][i][0]} {tops[d][i][1]:.1f} %" if i < len(tops[d]) else "" for d in duts]
    print(f"| {i + 1} | " + " | ".join(cells) + " |")
EOF
cat "$OUT/profile.md"
