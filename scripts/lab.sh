#!/usr/bin/env bash
# Shunt's built-in lab: network namespaces joined by veth pairs.
#
#   shunt-client (cli0 10.0.1.2, fd00:1::2)
#        │ veth
#   shunt (sh-cli 10.0.1.1 | sh-be 10.0.2.1)      ← Shunt runs here, XDP on both
#        │ veth
#   shunt-switch (bridge br0)
#        ├── shunt-be1 (be0 10.0.2.11, fd00:2::11)
#        ├── shunt-be2 (be0 10.0.2.12, fd00:2::12)
#        └── shunt-be3 (be0 10.0.2.13, fd00:2::13)
#
# Each veth end lives in its own namespace (same-namespace pairs deliver
# locally and never reach XDP). MACs are fixed so configs can name them.
# Kernel forwarding in `shunt` is off: only Shunt moves packets across.
#
# The service VIPs (10.0.100.1, fd00:100::1) are routed to Shunt; its SNAT
# pools (10.0.3.0/28, fd00:3::/124) are reached through the backends' default
# route, so replies come back to Shunt as well.
#
# Usage: lab.sh up | down | status
set -euo pipefail

NS_CLIENT=shunt-client
NS_SHUNT=shunt
NS_SWITCH=shunt-switch
BACKENDS=(1 2 3)
# RX/TX queues per veth; Shunt needs one worker socket per queue. More than
# one spreads flows over queues by hash, which exercises worker handoff.
QUEUES=${SHUNT_LAB_QUEUES:-1}
VIP4=10.0.100.1
VIP6=fd00:100::1

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# Offloads a peer must not use: AF_XDP would see partial checksums and
# GSO super-frames larger than a UMEM frame.
no_offload() { in_ns "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true; }

LAB_DIR=/run/shunt-lab

# A real HTTP server per backend: nginx serving its own name and a 1 MiB
# file whose digest tests compare end to end.
start_http() {
    local b=$1 dir="$LAB_DIR/be$1"
    mkdir -p "$dir/www"
    echo "shunt-be$b" > "$dir/www/index.html"
    [ -f "$LAB_DIR/big.bin" ] || head -c 1048576 /dev/urandom > "$LAB_DIR/big.bin"
    cp "$LAB_DIR/big.bin" "$dir/www/big.bin"
    cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_timeout 65;
    client_body_temp_path $dir/tmp;
    server {
        listen 80;
        listen [::]:80;
        root $dir/www;
    }
}
CONF
    mkdir -p "$dir/tmp"
    if command -v nginx >/dev/null; then
        in_ns "shunt-be$b" nginx -c "$dir/nginx.conf"
    else
        echo "lab: nginx not installed; backends have no HTTP server (run scripts/setup.sh)" >&2
    fi
}

stop_http() {
    for b in "${BACKENDS[@]}"; do
        local pidf="$LAB_DIR/be$b/nginx.pid"
        [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null || true
        rm -f "$pidf"
    done
}

down() {
    stop_http
    for ns in "$NS_CLIENT" "$NS_SHUNT" "$NS_SWITCH" $(for b in "${BACKENDS[@]}"; do echo "shunt-be$b"; done); do
        ip netns del "$ns" 2>/dev/null || true
    done
}

up() {
    down
    for ns in "$NS_CLIENT" "$NS_SHUNT" "$NS_SWITCH"; do ip netns add "$ns"; done
    for ns in "$NS_CLIENT" "$NS_SHUNT" "$NS_SWITCH"; do in_ns "$ns" ip link set lo up; done
    in_ns "$NS_SHUNT" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0

    # client ↔ shunt
    local q="numtxqueues $QUEUES numrxqueues $QUEUES"
    # shellcheck disable=SC2086
    ip link add cli0 netns "$NS_CLIENT" address 02:00:00:00:01:02 $q type veth \
        peer name sh-cli netns "$NS_SHUNT" address 02:00:00:00:01:01 $q
    in_ns "$NS_CLIENT" ip addr add 10.0.1.2/24 dev cli0
    in_ns "$NS_CLIENT" ip -6 addr add fd00:1::2/64 dev cli0 nodad
    in_ns "$NS_CLIENT" ip link set cli0 up
    in_ns "$NS_CLIENT" ip route add 10.0.2.0/24 via 10.0.1.1
    in_ns "$NS_CLIENT" ip route add "$VIP4"/32 via 10.0.1.1
    in_ns "$NS_CLIENT" ip -6 route add fd00:2::/64 via fd00:1::1
    in_ns "$NS_CLIENT" ip -6 route add "$VIP6"/128 via fd00:1::1
    no_offload "$NS_CLIENT" cli0
    in_ns "$NS_SHUNT" ip addr add 10.0.1.1/24 dev sh-cli
    in_ns "$NS_SHUNT" ip -6 addr add fd00:1::1/64 dev sh-cli nodad
    in_ns "$NS_SHUNT" ip link set sh-cli up

    # shunt ↔ switch
    # shellcheck disable=SC2086
    ip link add sh-be netns "$NS_SHUNT" address 02:00:00:00:02:01 $q type veth \
        peer name sw-sh netns "$NS_SWITCH" $q
    in_ns "$NS_SHUNT" ip addr add 10.0.2.1/24 dev sh-be
    in_ns "$NS_SHUNT" ip -6 addr add fd00:2::1/64 dev sh-be nodad
    in_ns "$NS_SHUNT" ip link set sh-be up
    in_ns "$NS_SWITCH" ip link add br0 type bridge
    in_ns "$NS_SWITCH" ip link set br0 up
    in_ns "$NS_SWITCH" ip link set sw-sh master br0 up
    no_offload "$NS_SWITCH" sw-sh

    # switch ↔ backends
    for b in "${BACKENDS[@]}"; do
        local ns="shunt-be$b" mac
        mac=$(printf '02:00:00:00:02:%02x' $((10 + b)))
        ip netns add "$ns"
        in_ns "$ns" ip link set lo up
        ip link add be0 netns "$ns" address "$mac" type veth peer name "sw-be$b" netns "$NS_SWITCH"
        in_ns "$ns" ip addr add "10.0.2.$((10 + b))/24" dev be0
        in_ns "$ns" ip -6 addr add "fd00:2::$((10 + b))/64" dev be0 nodad
        in_ns "$ns" ip link set be0 up
        in_ns "$ns" ip route add default via 10.0.2.1
        in_ns "$ns" ip -6 route add default via fd00:2::1
        no_offload "$ns" be0
        in_ns "$NS_SWITCH" ip link set "sw-be$b" master br0 up
        no_offload "$NS_SWITCH" "sw-be$b"
        start_http "$b"
    done
    # Static neighbours: Shunt rewrites MACs itself, but the kernels on each
    # side must resolve their next hop without depending on Shunt.
    in_ns "$NS_CLIENT" ip neigh replace 10.0.1.1 lladdr 02:00:00:00:01:01 dev cli0 nud permanent
    in_ns "$NS_CLIENT" ip -6 neigh replace fd00:1::1 lladdr 02:00:00:00:01:01 dev cli0 nud permanent
    for b in "${BACKENDS[@]}"; do
        in_ns "shunt-be$b" ip neigh replace 10.0.2.1 lladdr 02:00:00:00:02:01 dev be0 nud permanent
        in_ns "shunt-be$b" ip -6 neigh replace fd00:2::1 lladdr 02:00:00:00:02:01 dev be0 nud permanent
    done
    echo "lab up: namespaces $NS_CLIENT $NS_SHUNT $NS_SWITCH shunt-be{1..3}"
    echo "run Shunt: ip netns exec $NS_SHUNT shunt run --config config.toml"
}

status() {
    ip netns list
    in_ns "$NS_SHUNT" ip -br link 2>/dev/null || true
}

case "${1:-}" in
    up) up ;;
    down) down; echo "lab down" ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
