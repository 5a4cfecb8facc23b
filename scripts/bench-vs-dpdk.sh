#!/usr/bin/env bash
# Side-by-side lab comparison of Shunt against DPDK testpmd, the kernel
# (nftables DNAT + conntrack) and an in-kernel XDP forward, on veth pairs.
#
#   bench-gen (bg0) ── veth ── (bd0) bench-dut (bd1) ── veth ── (bs0) bench-sink
#   shunt-gen (or testpmd txonly)   DUT under test               XDP counter
#
# Run as root on a fresh Debian machine: bash scripts/bench-vs-dpdk.sh --help
# Everything it creates is named bench-* and is removed on exit (trap).
# Helpers, configs and XDP programs: scripts/bench/. Results: --out DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/scripts/bench"
ROUNDS=3
DURATION=10
WARMUP=2
OUT="$ROOT/target/bench-results"
QUICK=0
RATE=0
INSTALL=1
BUILD=1
DO_TCP=1
DO_SCALING=1
DUTS="shunt-l4lb shunt-l2fwd testpmd nft xdp"
SIZES="64 1500"
FLOWS="1 256 100000"
GENERATOR=shunt

usage() {
    cat <<'EOF'
usage: bash scripts/bench-vs-dpdk.sh [options]      (as root)

Builds a gen → DUT → sink veth topology in namespaces bench-gen, bench-dut,
bench-sink and measures, round after round (A B C D E A B C D E …):
  shunt-l4lb   Shunt, full L4LB pipeline (conntrack, maglev, nat, l2; full-NAT)
  shunt-l2fwd  Shunt, l2fwd only
  (optional: shunt-l4lb-rt, shunt-l2fwd-rt, testpmd-rt: the same with
   SCHED_FIFO priority 50 for the forwarding thread(s))
  testpmd      dpdk-testpmd --forward-mode=mac, af_xdp PMD on both veths
  nft          kernel forwarding, nftables DNAT+SNAT with conntrack
  xdp          in-kernel XDP MAC rewrite + bpf_redirect (the ceiling)
Generator (bench-gen): `shunt-gen`, Shunt's TX-only AF_XDP generator (default;
any flow count), or dpdk-testpmd txonly (af_xdp PMD; 1 or 256 flows only).
Sink: XDP counter.
Also: iperf3 TCP through shunt-l4lb and nft, and Shunt L4LB 1 vs 2 queues.

options:
  --rounds N       rounds of the whole matrix (default 3)
  --duration S     measured seconds per case (default 10)
  --warmup S       seconds of load before measuring (default 2)
  --sizes "A B"    UDP frame sizes in bytes, incl. Ethernet header w/o FCS (default "64 1500")
  --flows "A B"    distinct UDP 5-tuples per case, 1..1000000 (default "1 256 100000");
                   with --generator testpmd only 1 and 256 (others are skipped)
  --generator G    shunt (default: `shunt-gen`) or testpmd (txonly, af_xdp PMD)
  --rate PPS       offered load in packets/s, split over the queues (shunt-gen only;
                   default 0: as fast as the socket takes them, i.e. saturation)
  --duts "…"       subset/order of DUTs (default "shunt-l4lb shunt-l2fwd testpmd nft xdp")
  --out DIR        results directory (default target/bench-results)
  --quick          1 round, 4 s per case, 64 B × {1, 256, 100000} flows + 1500 B × 256 (< 6 min)
  --no-install     skip apt-get;  --no-build  skip cargo build --release
  --no-tcp         skip iperf3;   --no-scaling  skip the 2-queue run
  -h, --help       this text
Writes DIR/compare.md, DIR/compare.json, DIR/results.jsonl and DIR/logs/.
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --sizes) SIZES=$2; shift 2 ;;
        --flows) FLOWS=$2; shift 2 ;;
        --generator) GENERATOR=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --duts) DUTS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --no-install) INSTALL=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --no-tcp) DO_TCP=0; shift ;;
        --no-scaling) DO_SCALING=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$GENERATOR" in shunt|testpmd) ;; *) echo "bench: --generator is shunt or testpmd, not $GENERATOR" >&2; exit 2 ;; esac
for d in $DUTS; do
    case "$d" in
        testpmd|testpmd-rt|nft|xdp) ;;
        shunt-*) [ -f "$BENCH/$d.toml" ] || { echo "bench: no config $BENCH/$d.toml for DUT $d" >&2; exit 2; } ;;
        *) echo "bench: unknown DUT $d (see --help)" >&2; exit 2 ;;
    esac
done
if ! [[ $RATE =~ ^[0-9]+$ ]]; then echo "bench: --rate takes packets per second, not $RATE" >&2; exit 2; fi
if [ "$RATE" != 0 ] && [ "$GENERATOR" != shunt ]; then
    echo "bench: --rate needs --generator shunt (testpmd txonly has no rate limit)" >&2; exit 2
fi
if [ "$QUICK" = 1 ]; then
    ROUNDS=1; DURATION=4; WARMUP=1
    SIZES="64 1500"; FLOWS="1 256 100000"
fi
CASES=""
for s in $SIZES; do
    for f in $FLOWS; do
        [ "$QUICK" = 1 ] && [ "$s" = 1500 ] && [ "$f" != 256 ] && continue
        if ! [[ $f =~ ^[0-9]+$ ]] || [ "$f" -lt 1 ] || [ "$f" -gt 1000000 ]; then
            echo "bench: --flows takes numbers 1..1000000, not $f" >&2; exit 2
        fi
        if [ "$GENERATOR" = testpmd ] && [ "$f" != 1 ] && [ "$f" != 256 ]; then
            echo "bench: skipping $s B × $f flows: testpmd txonly varies only an 8-bit source-address counter (1 or 256 flows); use --generator shunt" >&2
            continue
        fi
        CASES="$CASES $s:$f"
    done
done
[ -n "$CASES" ] || { echo "bench: no cases left to run" >&2; exit 2; }
MAX_FLOWS=256  # the scaling run's
for c in $CASES; do [ "${c#*:}" -gt "$MAX_FLOWS" ] && MAX_FLOWS=${c#*:}; done
[ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 1; }

NS_GEN=bench-gen NS_DUT=bench-dut NS_SINK=bench-sink
MAC_G=02:00:00:00:b1:02 MAC_D0=02:00:00:00:b1:01 MAC_D1=02:00:00:00:b2:01 MAC_S=02:00:00:00:b2:02
IP_G=10.10.1.2 IP_D0=10.10.1.1 IP_D1=10.11.0.1 IP_S=10.11.0.2 VIP=10.12.0.1
BACKENDS="10.11.0.11 10.11.0.12 10.11.0.13"
CTL=/run/shunt-bench/control.sock
WORK=$(mktemp -d /tmp/bench-vs-dpdk.XXXXXX)
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
HZ=$(getconf CLK_TCK)
T0=$(date +%s)

log() { printf '[%4ds] %s\n' $(( $(date +%s) - T0 )) "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# ---------------------------------------------------------------- cleanup
DUT_PID="" GEN_PID=""
stop_pid() { # pid [grace seconds]: SIGINT, then SIGKILL
    local pid=$1 grace=${2:-10} i
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -INT "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
topo_down() {
    for ns in $NS_GEN $NS_DUT $NS_SINK; do ip netns del "$ns" 2>/dev/null || true; done
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    exec 8>&- 9>&- 2>/dev/null || true
    for p in $GEN_PIDS; do stop_pid "$p" 3; done
    stop_pid "$GEN_PID" 3
    stop_pid "$DUT_PID" 3
    topo_down
    rm -rf "$WORK"
    [ $rc = 0 ] || log "bench: exiting with status $rc (topology removed)"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- setup
if [ "$INSTALL" = 1 ]; then
    log "installing packages (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq >/dev/null
    # Debian 12: dpdk-testpmd is in dpdk-dev, the af_xdp PMD in librte-net-af-xdp23.
    timeout 900 apt-get install -y -qq dpdk dpdk-dev librte-net-af-xdp23 iperf3 clang llvm libbpf-dev \
        nftables conntrack iproute2 ethtool bpftool iputils-ping python3 procps >/dev/null
fi
TOOLS="iperf3 clang nft ip ethtool bpftool ping python3"
case " $DUTS " in *" testpmd "*|*" testpmd-rt "*) TOOLS="$TOOLS dpdk-testpmd chrt" ;; esac
[ "$GENERATOR" = testpmd ] && TOOLS="$TOOLS dpdk-testpmd"
for t in $TOOLS; do
    command -v "$t" >/dev/null || { echo "bench: $t not found (drop --no-install?)" >&2; exit 1; }
done
if [ "$BUILD" = 1 ]; then
    log "building Shunt and shunt-gen (cargo build --release)"
    (cd "$ROOT" && timeout 1200 cargo build --release --quiet)
fi
# Private copies: other builds may replace target/release/* mid-run.
cp "$ROOT/target/release/shunt" "$WORK/shunt"
cp "$ROOT/target/release/shunt-gen" "$WORK/shunt-gen"
SHUNT="$WORK/shunt"
SHUNT_GEN="$WORK/shunt-gen"

CLANG=(clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -Wall)
"${CLANG[@]}" -c "$BENCH/xdp_sink_count.c" -o "$WORK/sink.o"
"${CLANG[@]}" -c "$BENCH/xdp_pass.c" -o "$WORK/pass.o"
macb() { echo "0x${1//:/,0x}"; }

# ---------------------------------------------------------------- topology
QUEUES=0
topo_up() { # queues
    local q=$1 qq="numtxqueues $1 numrxqueues $1"
    topo_down
    for ns in $NS_GEN $NS_DUT $NS_SINK; do ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
    # shellcheck disable=SC2086
    ip link add bg0 netns $NS_GEN address $MAC_G $qq type veth peer name bd0 netns $NS_DUT address $MAC_D0 $qq
    # shellcheck disable=SC2086
    ip link add bd1 netns $NS_DUT address $MAC_D1 $qq type veth peer name bs0 netns $NS_SINK address $MAC_S $qq
    in_ns $NS_GEN ip addr add $IP_G/24 dev bg0
    in_ns $NS_DUT ip addr add $IP_D0/24 dev bd0
    in_ns $NS_DUT ip addr add $IP_D1/24 dev bd1
    in_ns $NS_SINK ip addr add $IP_S/24 dev bs0
    for b in $BACKENDS; do in_ns $NS_SINK ip addr add "$b/32" dev bs0; done
    for x in "$NS_GEN bg0" "$NS_DUT bd0" "$NS_DUT bd1" "$NS_SINK bs0"; do
        # shellcheck disable=SC2086
        set -- $x; in_ns "$1" ip link set "$2" up
    done
    # Peers: no TX checksum offload / GSO (AF_XDP would see partial checksums).
    in_ns $NS_GEN ethtool -K bg0 tx off tso off gso off gro off >/dev/null 2>&1 || true
    in_ns $NS_SINK ethtool -K bs0 tx off tso off gso off gro off >/dev/null 2>&1 || true
    in_ns $NS_GEN ip route add default via $IP_D0
    in_ns $NS_SINK ip route add default via $IP_D1
    in_ns $NS_GEN ip neigh replace $IP_D0 lladdr $MAC_D0 dev bg0 nud permanent
    in_ns $NS_SINK ip neigh replace $IP_D1 lladdr $MAC_D1 dev bs0 nud permanent
    in_ns $NS_DUT ip neigh replace $IP_G lladdr $MAC_G dev bd0 nud permanent
    for b in $IP_S $BACKENDS; do in_ns $NS_DUT ip neigh replace "$b" lladdr $MAC_S dev bd1 nud permanent; done
    in_ns $NS_DUT sysctl -qw net.ipv4.ip_forward=0 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    in_ns $NS_SINK sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    # shunt-gen's socket is TX-only and needs no XDP program; bg0 gets
    # xdp_pass anyway: a veth that receives bpf_redirect()ed frames (the
    # XDP DUT's return path for the ping replies) needs one. testpmd's PMD
    # attaches the same program itself (xdp_prog=).
    if [ "$GENERATOR" = shunt ]; then in_ns $NS_GEN ip link set bg0 xdpdrv obj "$WORK/pass.o" sec xdp; fi
    # Sink counter (drops the benchmark's UDP, passes the rest).
    in_ns $NS_SINK ip link set bs0 xdpdrv obj "$WORK/sink.o" sec xdp
    local prog
    prog=$(in_ns $NS_SINK ip -j -d link show bs0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["xdp"]["prog"]["id"])')
    # Its maps by name: the counters and the one-way latency histogram.
    read -r SINK_MAP LAT_MAP < <(bpftool -j prog show id "$prog" | python3 -c '
import json, subprocess, sys
ids = json.load(sys.stdin)["map_ids"]
name = {i: json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id", str(i)],
                                     capture_output=True, text=True).stdout)["name"] for i in ids}
by = {v: k for k, v in name.items()}
print(by["bench_cnt"], by["bench_lat"])')
    IDX_D0=$(in_ns $NS_DUT cat /sys/class/net/bd0/ifindex)
    IDX_D1=$(in_ns $NS_DUT cat /sys/class/net/bd1/ifindex)
    QUEUES=$q
}
sink_read() { bpftool -j map dump id "$SINK_MAP" | python3 "$BENCH/bench.py" cnt; }
lat_read() { bpftool -j map dump id "$LAT_MAP" > "$1"; } # file

# ---------------------------------------------------------------- CPU
proc_ticks() { # pid -> utime+stime (ticks), all threads
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
softirq_ticks() { awk '/^cpu / { print $8 }' /proc/stat; }

# ---------------------------------------------------------------- DUTs
dut_start() { # name
    local name=$1 lg="$OUT/logs/$2-dut.log"
    DUT_PID=""
    case "$name" in
        shunt-*)
            mkdir -p /run/shunt-bench
            rm -f "$CTL"
            ip netns exec $NS_DUT "$SHUNT" run --config "$BENCH/$name.toml" > "$lg" 2>&1 &
            DUT_PID=$!
            wait_for "$lg" "shunt: running" 20 "$DUT_PID" || { cat "$lg" >&2; return 1; }
            ;;
        testpmd|testpmd-rt)
            mkfifo "$WORK/dut.fifo"
            # testpmd-rt: SCHED_FIFO 50 for the whole process, like Shunt's
            # -rt workers; its other threads block (stdin, EAL control).
            local rt=()
            [ "$name" = testpmd-rt ] && rt=(chrt -f 50)
            # stdin = a FIFO we hold open: closing it is testpmd's clean exit.
            ip netns exec $NS_DUT "${rt[@]}" stdbuf -oL -eL dpdk-testpmd -l 0,1 --main-lcore 0 --no-pci --no-huge -m 1024 --no-shconf \
                --file-prefix bench-dut --log-level=pmd.net.af_xdp:warning \
                --vdev net_af_xdp0,iface=bd0 --vdev net_af_xdp1,iface=bd1 -- \
                --total-num-mbufs=16384 --forward-mode=mac --eth-peer=0,$MAC_G --eth-peer=1,$MAC_S \
                --auto-start < "$WORK/dut.fifo" > "$lg" 2>&1 &
            DUT_PID=$!
            exec 9> "$WORK/dut.fifo"
            wait_for "$lg" "Press enter to exit" 30 "$DUT_PID" || { cat "$lg" >&2; return 1; }
            ;;
        nft)
            in_ns $NS_DUT sysctl -qw net.ipv4.ip_forward=1
            in_ns $NS_DUT nft -f "$BENCH/nft-dnat.nft"
            # One conntrack entry per flow. Since Linux 6.x a namespace may
            # not raise nf_conntrack_max above the host's: say so if short.
            in_ns $NS_DUT sysctl -qw net.netfilter.nf_conntrack_max=1048576 2>/dev/null || true
            local ctmax; ctmax=$(in_ns $NS_DUT sysctl -n net.netfilter.nf_conntrack_max 2>/dev/null || echo 0)
            if [ "$ctmax" -lt "$((MAX_FLOWS + MAX_FLOWS / 4))" ]; then
                log "  warning: nf_conntrack_max is $ctmax, below $MAX_FLOWS flows + 25%: raise it on the host" \
                    "(sysctl -w net.netfilter.nf_conntrack_max=$((MAX_FLOWS * 2))) or nft drops will count as loss"
            fi
            ;;
        xdp)
            "${CLANG[@]}" -DOUT_IFINDEX="$IDX_D1" -DDST_MAC="$(macb $MAC_S)" -DSRC_MAC="$(macb $MAC_D1)" \
                -c "$BENCH/xdp_fwd.c" -o "$WORK/fwd0.o"
            "${CLANG[@]}" -DOUT_IFINDEX="$IDX_D0" -DDST_MAC="$(macb $MAC_G)" -DSRC_MAC="$(macb $MAC_D0)" \
                -c "$BENCH/xdp_fwd.c" -o "$WORK/fwd1.o"
            in_ns $NS_DUT ip link set bd0 xdpdrv obj "$WORK/fwd0.o" sec xdp
            in_ns $NS_DUT ip link set bd1 xdpdrv obj "$WORK/fwd1.o" sec xdp
            ;;
        *) echo "bench: unknown DUT $name" >&2; return 1 ;;
    esac
    sleep 1
}
dut_stop() { # name
    case "$1" in
        shunt-*) stop_pid "$DUT_PID" 10 ;;
        testpmd|testpmd-rt)
            exec 9>&-
            local i; for ((i = 0; i < 100; i++)); do kill -0 "$DUT_PID" 2>/dev/null || break; sleep 0.1; done
            stop_pid "$DUT_PID" 5; rm -f "$WORK/dut.fifo" ;;
        nft)
            in_ns $NS_DUT nft delete table ip bench 2>/dev/null || true
            in_ns $NS_DUT sysctl -qw net.ipv4.ip_forward=0
            in_ns $NS_DUT conntrack -F >/dev/null 2>&1 || true ;;
        xdp)
            in_ns $NS_DUT ip link set bd0 xdpdrv off 2>/dev/null || true
            in_ns $NS_DUT ip link set bd1 xdpdrv off 2>/dev/null || true ;;
    esac
    DUT_PID=""
}
wait_for() { # file pattern seconds [pid that must stay alive]
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then
            echo "bench: process exited before '$2' appeared in $1" >&2; return 1
        fi
        sleep 0.1
    done
    echo "bench: timed out waiting for '$2' in $1" >&2
    return 1
}

# ---------------------------------------------------------------- generator
# shunt-gen (default): one TX-only AF_XDP socket per bg0 queue, pinned to
# CPU 0, frames prebuilt in UMEM, `flows` distinct 5-tuples (source port
# 1024.. then the next source address), as fast as the socket takes them.
# It stops on SIGINT and prints a JSON summary with its TX count.
GEN_PIDS=""
gen_start() { # size flows dst log
    if [ "$GENERATOR" = shunt ]; then gen_start_shunt "$@"; else gen_start_testpmd "$@"; fi
}
gen_start_shunt() { # size flows dst log
    local size=$1 flows=$2 dst=$3 lg=$4 q n ports=$((64512 / QUEUES)) rate=()
    GEN_PIDS=""
    [ "$RATE" = 0 ] || rate=(--rate $((RATE / QUEUES)))
    for ((q = 0; q < QUEUES; q++)); do
        # Split the flows over the queues (bg0 TX queue q arrives on bd0 RX
        # queue q); queue q walks its own slice of source ports, so the
        # flows stay distinct.
        n=$(( flows / QUEUES + (q < flows % QUEUES ? 1 : 0) ))
        [ "$n" -ge 1 ] || continue
        timeout -s INT $((WARMUP + DURATION + 60)) ip netns exec $NS_GEN "$SHUNT_GEN" --iface bg0 --queue $q \
            --dst-mac $MAC_D0 --src-ip $IP_G --dst-ip "$dst" --dst-port 9 --src-port $((1024 + q * ports)) \
            --src-ports $ports --flows "$n" --size "$size" --cpu 0 --json "${rate[@]}" \
            > "$lg.q$q.json" 2> "$lg.q$q" &
        GEN_PIDS="$GEN_PIDS $!"
        wait_for "$lg.q$q" "shunt-gen: sending" 30 "$!" || { cat "$lg.q$q" >&2; return 1; }
    done
}
# testpmd txonly on bg0 through the af_xdp PMD, forwarding lcore 0 (main
# lcore 1 only sleeps in read(2) on its stdin FIFO). Its XDP program is
# xdp_pass.o: it never receives, so the ping probe's replies reach the kernel.
gen_start_testpmd() { # size flows dst log
    local size=$1 flows=$2 dst=$3 lg=$4 mf="" qs=""
    [ "$flows" -gt 1 ] && mf="--txonly-multi-flow"
    [ "$QUEUES" -gt 1 ] && qs="--rxq=$QUEUES --txq=$QUEUES"
    rm -f "$WORK/gen.fifo"; mkfifo "$WORK/gen.fifo"
    # shellcheck disable=SC2086
    timeout -s INT $((WARMUP + DURATION + 60)) ip netns exec $NS_GEN stdbuf -oL -eL dpdk-testpmd -l 0,1 --main-lcore 1 \
        --no-pci --no-huge -m 1024 --no-shconf --file-prefix bench-gen --log-level=pmd.net.af_xdp:warning \
        --vdev "net_af_xdp0,iface=bg0,start_queue=0,queue_count=$QUEUES,xdp_prog=$WORK/pass.o" -- \
        --total-num-mbufs=16384 --forward-mode=txonly $mf --txpkts="$size" \
        --tx-ip=$IP_G,"$dst" --tx-udp=9,9 --eth-peer=0,$MAC_D0 $qs --auto-start \
        < "$WORK/gen.fifo" > "$lg" 2>&1 &
    GEN_PID=$!
    exec 8> "$WORK/gen.fifo"
    wait_for "$lg" "Press enter to exit" 30 "$GEN_PID" || { cat "$lg" >&2; return 1; }
}
gen_stop() {
    if [ "$GENERATOR" = shunt ]; then
        local p; for p in $GEN_PIDS; do stop_pid "$p" 5; done
        GEN_PIDS="" GEN_PID=""
        return 0
    fi
    exec 8>&-
    local i; for ((i = 0; i < 150; i++)); do kill -0 "$GEN_PID" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$GEN_PID" 5
    GEN_PID=""
}
gen_result() { # log -> JSON {tx, tx_dropped, rx}
    if [ "$GENERATOR" = shunt ]; then
        python3 "$BENCH/bench.py" shuntgen "$1".q*.json
    else
        python3 "$BENCH/bench.py" testpmd "$1"
    fi
}

# ---------------------------------------------------------------- one case
run_case() { # kind dut size flows round
    local kind=$1 dut=$2 size=$3 flows=$4 round=$5
    local tag="r${round}-${dut}-${size}B-${flows}f-q${QUEUES}" dst=$IP_S cfgdut=$dut
    case "$dut" in shunt-l4lb*|nft) dst=$VIP ;; esac
    dut_start "$cfgdut" "$tag" || { log "  $tag: DUT failed to start (skipped)"; dut_stop "$cfgdut"; return 0; }
    local s0 s1 a b ta tb pa pb qa qb
    read -r s0 _ < <(sink_read)
    if ! gen_start "$size" "$flows" "$dst" "$OUT/logs/$tag-gen.log"; then
        log "  $tag: generator failed to start (skipped)"; gen_stop; dut_stop "$cfgdut"; return 0
    fi
    sleep "$WARMUP"
    read -r a _ < <(sink_read); ta=$(date +%s.%N); pa=$(proc_ticks "$DUT_PID"); qa=$(softirq_ticks)
    lat_read "$OUT/logs/$tag-lat0.json"
    timeout $((DURATION + 10)) ip netns exec $NS_GEN ping -n -i 0.01 -W 1 -c $((DURATION * 100 - 50)) -s 56 $IP_S \
        > "$OUT/logs/$tag-ping.log" 2>&1 &
    local ping_pid=$!
    sleep "$DURATION"
    read -r b _ < <(sink_read); tb=$(date +%s.%N); pb=$(proc_ticks "$DUT_PID"); qb=$(softirq_ticks)
    lat_read "$OUT/logs/$tag-lat1.json"
    wait "$ping_pid" 2>/dev/null || true
    local hist='null'
    if [[ $dut == shunt-* ]]; then
        timeout 10 "$SHUNT" histogram --socket "$CTL" --format json > "$OUT/logs/$tag-hist.json" 2>/dev/null || true
        hist=$(python3 "$BENCH/bench.py" hist "$OUT/logs/$tag-hist.json")
    fi
    gen_stop
    sleep 0.5
    read -r s1 _ < <(sink_read)
    dut_stop "$cfgdut"
    local gen pingj latj
    gen=$(gen_result "$OUT/logs/$tag-gen.log")
    pingj=$(python3 "$BENCH/bench.py" ping "$OUT/logs/$tag-ping.log")
    latj=$(python3 "$BENCH/bench.py" lat "$OUT/logs/$tag-lat0.json" "$OUT/logs/$tag-lat1.json")
    python3 - "$kind" "$dut" "$size" "$flows" "$round" "$QUEUES" "$s0" "$a" "$b" "$s1" "$ta" "$tb" "$pa" "$pb" "$qa" "$qb" "$HZ" \
        "$gen" "$pingj" "$hist" "$latj" >> "$RESULTS" <<'PY'
import json, sys
(kind, dut, size, flows, rnd, q, s0, a, b, s1, ta, tb, pa, pb, qa, qb, hz, gen, ping, hist, lat) = sys.argv[1:]
win = float(tb) - float(ta); hz = float(hz)
gen = json.loads(gen); sent = gen.get("tx") or 0; got = int(s1) - int(s0)
is_proc = dut.startswith(("shunt", "testpmd"))
print(json.dumps({
    "kind": kind, "dut": dut, "size": int(size), "flows": int(flows), "round": int(rnd), "queues": int(q),
    "window_s": round(win, 3), "mpps": round((int(b) - int(a)) / win / 1e6, 4),
    "gen_tx": sent, "gen_tx_dropped": gen.get("tx_dropped"), "sink_rx": got,
    "loss_pct": round(100.0 * (sent - got) / sent, 2) if sent else None,
    "cpu_proc_s_per_s": round((int(pb) - int(pa)) / hz / win, 3) if is_proc else None,
    "softirq_s_per_s": round((int(qb) - int(qa)) / hz / win, 3),
    "ping": json.loads(ping), "hist": json.loads(hist), "lat": json.loads(lat),
}))
PY
    python3 - "$RESULTS" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
p = r["ping"]; h = r["hist"] or {}; l = r.get("lat") or {}
extra = f" hist p99 {h.get('p99_us')} µs" if h else ""
if l.get("count"):
    extra += f", one-way p50/p99 {l.get('p50_us')}/{l.get('p99_us')} µs"
print(f"         -> {r['mpps']:.3f} Mpps at sink, loss {r['loss_pct']}%, proc CPU {r['cpu_proc_s_per_s']} s/s, "
      f"softirq {r['softirq_s_per_s']} s/s, ping p50/p99 {p.get('p50_us')}/{p.get('p99_us')} µs (lost {p.get('loss_pct')}%)" + extra)
PY
}

# ---------------------------------------------------------------- TCP
run_tcp() { # dut round
    local dut=$1 round=$2 tag="r$2-$1-tcp"
    dut_start "$dut" "$tag" || { log "  $tag: DUT failed to start (skipped)"; dut_stop "$dut"; return 0; }
    timeout $((DURATION + 30)) ip netns exec $NS_SINK iperf3 -s -1 -p 5201 > "$OUT/logs/$tag-server.log" 2>&1 &
    local srv=$! pa pb qa qb ta tb
    sleep 0.5
    ta=$(date +%s.%N); pa=$(proc_ticks "$DUT_PID"); qa=$(softirq_ticks)
    timeout $((DURATION + 20)) ip netns exec $NS_GEN iperf3 -c $VIP -p 5201 -t "$DURATION" -J \
        > "$OUT/logs/$tag.json" 2> "$OUT/logs/$tag.err" || log "  $tag: iperf3 failed (see logs)"
    tb=$(date +%s.%N); pb=$(proc_ticks "$DUT_PID"); qb=$(softirq_ticks)
    stop_pid "$srv" 3
    dut_stop "$dut"
    python3 - "$dut" "$round" "$OUT/logs/$tag.json" "$ta" "$tb" "$pa" "$pb" "$qa" "$qb" "$HZ" >> "$RESULTS" <<'PY'
import json, sys
dut, rnd, path, ta, tb, pa, pb, qa, qb, hz = sys.argv[1:]
win = float(tb) - float(ta); hz = float(hz)
try:
    d = json.load(open(path)); e = d["end"]
    gbps = e["sum_received"]["bits_per_second"] / 1e9
    retr = e["sum_sent"].get("retransmits")
except Exception:
    gbps, retr = None, None
print(json.dumps({"kind": "tcp", "dut": dut, "round": int(rnd), "queues": 1,
    "gbps": None if gbps is None else round(gbps, 3), "retransmits": retr,
    "cpu_proc_s_per_s": round((int(pb) - int(pa)) / hz / win, 3) if dut.startswith("shunt") else None,
    "softirq_s_per_s": round((int(qb) - int(qa)) / hz / win, 3)}))
PY
    log "         -> $(tail -n1 "$RESULTS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["gbps"], "Gbit/s, retransmits", r["retransmits"])')"
}

# ---------------------------------------------------------------- main
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "bench: rounds=$ROUNDS duration=${DURATION}s warmup=${WARMUP}s cases=[$CASES ] duts=[$DUTS] generator=$GENERATOR out=$OUT"
log "load average before: $LOAD_BEFORE"
topo_up 1
for ((r = 1; r <= ROUNDS; r++)); do
    for c in $CASES; do
        size=${c%:*} flows=${c#*:}
        for d in $DUTS; do
            log "round $r/$ROUNDS: $d, UDP ${size} B, $flows flow(s)"
            run_case udp "$d" "$size" "$flows" "$r"
        done
    done
    if [ "$DO_TCP" = 1 ]; then
        for d in $DUTS; do
            case "$d" in shunt-l4lb|nft) log "round $r/$ROUNDS: $d, TCP iperf3 ${DURATION} s"; run_tcp "$d" "$r" ;; esac
        done
    fi
    if [ "$DO_SCALING" = 1 ]; then
        log "round $r/$ROUNDS: shunt-l4lb-2q, UDP 64 B, 256 flows, 2 queues / 2 workers"
        topo_up 2
        run_case scaling shunt-l4lb-2q 64 256 "$r"
        topo_up 1
        log "round $r/$ROUNDS: shunt-l4lb (scaling baseline), UDP 64 B, 256 flows, 1 queue / 1 worker"
        run_case scaling shunt-l4lb 64 256 "$r"
    fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$OUT/meta.json" <<PY
import json, sys, subprocess, platform
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
json.dump({"machine": f"{cpu}, $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)",
           "kernel": platform.release(), "load_before": "$LOAD_BEFORE", "load_after": "$LOAD_AFTER",
           "command": "bash scripts/bench-vs-dpdk.sh $( [ $QUICK = 1 ] && echo --quick )".strip(),
           "rounds": $ROUNDS, "duration": $DURATION, "warmup": $WARMUP, "rate_pps": $RATE,
           "testpmd": subprocess.run(["dpkg-query", "-W", "-f", "\${Version}", "dpdk-dev"], capture_output=True, text=True).stdout,
           "generator": ("shunt-gen (TX-only AF_XDP, copy mode) on bench-gen/bg0, one per queue, CPU 0"
                         if "$GENERATOR" == "shunt" else
                         "dpdk-testpmd txonly, af_xdp PMD (copy mode) on bench-gen/bg0, 1 forwarding lcore on CPU 0")},
          open(sys.argv[1], "w"), indent=1)
PY
log "load average after: $LOAD_AFTER"
python3 "$BENCH/bench.py" report "$RESULTS" "$OUT" "$OUT/meta.json"
log "wrote $OUT/compare.md, $OUT/compare.json, $OUT/results.jsonl (logs in $OUT/logs/)"
