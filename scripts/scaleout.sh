#!/usr/bin/env bash
# A two-node Shunt tier behind an ECMP router, in network namespaces:
#
#   shunt-client (cl0 10.1.1.2)
#        │
#   shunt-router (BIRD 2, ECMP, fib_multipath_hash_policy=1)
#        ├── rt-n1 10.1.11.1 ── up0 10.1.11.2  shunt-n1 (Shunt + ExaBGP) dn0 10.1.2.1 ──┐
#        ├── rt-n2 10.1.12.1 ── up0 10.1.12.2  shunt-n2 (Shunt + ExaBGP) dn0 10.1.2.2 ──┤
#        └── rt-sw 10.1.2.254 (backends' default route) ──────────────────────────────┤
#                                                               shunt-switch (bridge br0)
#                                               shunt-so-be1 10.1.2.11, shunt-so-be2 10.1.2.12
#
# VIP 10.1.100.1:80 (pipelines/dsr.toml): each node announces it over eBGP
# (AS 65001 → router AS 65000) while its Shunt serves it; the router keeps
# one nexthop per announcing node. Backends hold the VIP on lo (arp_ignore,
# arp_announce) and reply to the client through the router (DSR).
# Namespaces do not overlap the single-node lab's (scripts/lab.sh), except
# shunt-client and shunt-switch: the two labs are not up at the same time.
#
# Usage: scaleout.sh up | down | status | nexthops | start-shunt N
# (hold the lab lock: flock /run/shunt-lab.lock scripts/scaleout.sh up)
set -euo pipefail
cd "$(dirname "$0")/.."

SHUNT=${SHUNT:-$PWD/target/release/shunt}
CONFIG=${SHUNT_SCALEOUT_CONFIG:-$PWD/pipelines/dsr.toml}
DIR=/run/shunt-scaleout
VIP=10.1.100.1
NODES=(1 2)
BACKENDS=(1 2)
ROUTER_MAC=02:00:00:10:10:01

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
no_offload() { in_ns "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true; }
all_ns() { echo shunt-client shunt-router shunt-switch; for n in "${NODES[@]}"; do echo "shunt-n$n"; done; for b in "${BACKENDS[@]}"; do echo "shunt-so-be$b"; done; }

# Stops the process in pidfile F (with signal S, default TERM) and waits
# until it is gone.
stop_pidfile() {
    local f=$1 sig=${2:-TERM} pid i
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    kill -s "$sig" "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -s KILL "$pid" 2>/dev/null || true
    rm -f "$f"
}

down() {
    for n in "${NODES[@]}"; do
        stop_pidfile "$DIR/exabgp-n$n.pid"
        # Tearing the lab down: no stop drain to wait for.
        stop_pidfile "$DIR/shunt-n$n.pid" KILL
    done
    stop_pidfile "$DIR/bird.pid"
    for b in "${BACKENDS[@]}"; do stop_pidfile "$DIR/be$b/nginx.pid"; done
    # Anything still running in the namespaces (a feed whose speaker died).
    for ns in $(all_ns); do
        [ -e "/run/netns/$ns" ] && for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    done
    sleep 0.2
    for ns in $(all_ns); do ip netns del "$ns" 2>/dev/null || true; done
}

veth() { # veth NS1 IF1 MAC1 NS2 IF2 [MAC2]
    local mac2=()
    [ -n "${6:-}" ] && mac2=(address "$6")
    ip link add "$2" netns "$1" address "$3" type veth peer name "$5" netns "$4" "${mac2[@]}"
    in_ns "$1" ip link set "$2" up
    in_ns "$4" ip link set "$5" up
    no_offload "$1" "$2"
    no_offload "$4" "$5"
}

topology() {
    for ns in $(all_ns); do ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
    in_ns shunt-router sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    veth shunt-client cl0 02:00:00:10:01:02 shunt-router rt-cl 02:00:00:10:01:01
    in_ns shunt-client ip addr add 10.1.1.2/24 dev cl0
    in_ns shunt-client ip route add default via 10.1.1.1
    in_ns shunt-router ip addr add 10.1.1.1/24 dev rt-cl
    in_ns shunt-switch ip link add br0 type bridge
    in_ns shunt-switch ip link set br0 up
    for n in "${NODES[@]}"; do
        local ns="shunt-n$n"
        in_ns "$ns" sysctl -qw net.ipv4.ip_forward=0
        veth shunt-router "rt-n$n" "$ROUTER_MAC" "$ns" up0 "02:00:00:10:1$n:02"
        in_ns shunt-router ip addr add "10.1.1$n.1/24" dev "rt-n$n"
        in_ns "$ns" ip addr add "10.1.1$n.2/24" dev up0
        veth "$ns" dn0 "02:00:00:10:02:0$n" shunt-switch "sw-n$n"
        in_ns shunt-switch ip link set "sw-n$n" master br0
        in_ns "$ns" ip addr add "10.1.2.$n/24" dev dn0
    done
    veth shunt-router rt-sw 02:00:00:10:02:fe shunt-switch sw-rt
    in_ns shunt-switch ip link set sw-rt master br0
    in_ns shunt-router ip addr add 10.1.2.254/24 dev rt-sw
    for b in "${BACKENDS[@]}"; do
        local ns="shunt-so-be$b"
        veth "$ns" be0 "02:00:00:10:02:1$b" shunt-switch "sw-be$b"
        in_ns shunt-switch ip link set "sw-be$b" master br0
        in_ns "$ns" ip addr add "10.1.2.1$b/24" dev be0
        # DSR: the VIP is local, never answered for on the wire.
        in_ns "$ns" ip addr add "$VIP/32" dev lo
        in_ns "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
            net.ipv4.conf.be0.arp_ignore=1 net.ipv4.conf.be0.arp_announce=2
        in_ns "$ns" ip route add default via 10.1.2.254
        start_http "$b"
    done
}

# nginx per backend, as the lab's: its name at /, a 1 MiB /big.bin, and
# /health (500 while www/down exists).
start_http() {
    HTTP_DIR=$DIR bash scripts/lab.sh http "$1" "shunt-so-be$1" "listen 80;"
}

start_router() {
    cat > "$DIR/bird.conf" <<CONF
router id 10.1.1.1;
protocol device {}
protocol kernel {
    ipv4 { import none; export all; };
    merge paths on;
}
template bgp shunt_node {
    hold time 3;
    keepalive time 1;
    connect retry time 1;
    ipv4 { import all; export none; };
}
protocol bgp n1 from shunt_node { local 10.1.11.1 as 65000; neighbor 10.1.11.2 as 65001; }
protocol bgp n2 from shunt_node { local 10.1.12.1 as 65000; neighbor 10.1.12.2 as 65001; }
CONF
    in_ns shunt-router bird -c "$DIR/bird.conf" -s "$DIR/bird.ctl" -P "$DIR/bird.pid"
}

# Shunt on node N (its speaker's feed announces again once it answers).
start_shunt() {
    local n=$1
    # `ip netns exec` execs Shunt: $! is Shunt's own pid.
    ip netns exec "shunt-n$n" "$SHUNT" run --config "$CONFIG" --control-socket "$DIR/n$n.sock" >>"$DIR/shunt-n$n.log" 2>&1 &
    echo $! > "$DIR/shunt-n$n.pid"
}

# Shunt and its speaker on node N.
start_node() {
    local n=$1 ns="shunt-n$1" sock="$DIR/n$1.sock"
    start_shunt "$n"
    cat > "$DIR/exabgp-n$n.conf" <<CONF
process shunt {
    run $SHUNT --socket $sock bgp-feed --interval 0.5;
    encoder text;
}
neighbor 10.1.1$n.1 {
    router-id 10.1.1$n.2;
    local-address 10.1.1$n.2;
    local-as 65001;
    peer-as 65000;
    hold-time 3;
    api {
        processes [ shunt ];
    }
}
CONF
    ip netns exec "$ns" env exabgp.daemon.user=root exabgp.api.cli=false exabgp.log.destination="$DIR/exabgp-n$n.log" \
        exabgp "$DIR/exabgp-n$n.conf" >/dev/null 2>&1 &
    echo $! > "$DIR/exabgp-n$n.pid"
}

# Number of nexthops the router has for the VIP.
nexthops() {
    local r
    r=$(in_ns shunt-router ip route show "$VIP" 2>/dev/null)
    if [ -z "$r" ]; then echo 0
    elif grep -q nexthop <<<"$r"; then grep -c nexthop <<<"$r"
    else echo 1; fi
}

up() {
    down
    mkdir -p "$DIR"
    rm -f "$DIR"/*.log
    command -v bird >/dev/null && command -v exabgp >/dev/null && command -v nginx >/dev/null || {
        echo "scaleout: needs bird2, exabgp and nginx (scripts/setup.sh)" >&2; exit 1; }
    [ -x "$SHUNT" ] || { echo "scaleout: no $SHUNT (cargo build --release)" >&2; exit 1; }
    topology
    start_router
    for n in "${NODES[@]}"; do start_node "$n"; done
    local deadline=$((SECONDS + ${SHUNT_SCALEOUT_WAIT:-30}))
    while [ "$(nexthops)" -lt "${#NODES[@]}" ]; do
        if [ $SECONDS -ge $deadline ]; then
            echo "scaleout: the router has $(nexthops) nexthop(s) for $VIP after waiting; logs in $DIR" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "scaleout up: $(in_ns shunt-router ip route show "$VIP" | tr -s '\n ' ' ')"
    echo "try: ip netns exec shunt-client curl http://$VIP/"
}

status() {
    local missing=0
    for ns in $(all_ns); do
        if [ -e "/run/netns/$ns" ]; then printf '%-14s up\n' "$ns"; else printf '%-14s missing\n' "$ns"; missing=1; fi
    done
    [ "$missing" = 0 ] || { echo "scale-out lab is down: scripts/scaleout.sh up" >&2; return 1; }
    echo "router: $(nexthops) nexthop(s) for $VIP"
    in_ns shunt-router ip route show "$VIP" | sed 's/^/  /'
}

case "${1:-}" in
    up) up ;;
    down) down; echo "scaleout down" ;;
    status) status ;;
    nexthops) nexthops ;;
    start-shunt) start_shunt "${2:?node number}" ;;
    *) echo "usage: $0 up | down | status | nexthops | start-shunt N" >&2; exit 2 ;;
esac
