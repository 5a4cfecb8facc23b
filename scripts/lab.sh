#!/usr/bin/env bash
# Shunt's built-in lab: network namespaces joined by veth pairs.
#
#   shunt-client (cli0 10.0.1.2, fd00:1::2)     shunt-client6 (c6 fd00:6::2, IPv6 only)
#        │ veth                                     │ veth
#   shunt (sh-cli 10.0.1.1 | sh-be 10.0.2.1 | sh-c6 fd00:6::1)  ← Shunt runs here
#        │ veth
#   shunt-switch (bridge br0)
#        ├── shunt-be1 (be0 10.0.2.11, fd00:2::11)
#        ├── shunt-be2 (be0 10.0.2.12, fd00:2::12)
#        ├── shunt-be3 (be0 10.0.2.13, fd00:2::13)
#        ├── shunt-be6 (be0 fd00:2::21, IPv6 only; routes fd00:201::/120 onward)
#        └── shunt-v4srv (be0 198.51.100.80, IPv4 only)
#
# Each veth end lives in its own namespace (same-namespace pairs deliver
# locally and never reach XDP). MACs are fixed so configs can name them.
# Kernel forwarding in `shunt` is off: only Shunt moves packets across.
#
# The service VIPs (10.0.100.1, fd00:100::1) are routed to Shunt; its SNAT
# pools (10.0.3.0/28, fd00:3::/124) are reached through the backends' default
# route, so replies come back to Shunt as well.
#
# Usage: lab.sh up | down | status   (env: SHUNT_LAB_QUEUES, SHUNT_LAB_MTU)
set -euo pipefail

NS_CLIENT=shunt-client
NS_SHUNT=shunt
NS_SWITCH=shunt-switch
NS_CLIENT6=shunt-client6
NS_BE6=shunt-be6
NS_V4SRV=shunt-v4srv
BACKENDS=(1 2 3)
# RX/TX queues per veth; Shunt needs one worker socket per queue. More than
# one spreads flows over queues by hash, which exercises worker handoff.
QUEUES=${SHUNT_LAB_QUEUES:-1}
# MTU of every lab link (jumbo-frame tests use 9000).
MTU=${SHUNT_LAB_MTU:-1500}
VIP4=10.0.100.1
VIP6=fd00:100::1

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# Offloads a peer must not use: AF_XDP would see partial checksums and
# GSO super-frames larger than a UMEM frame.
no_offload() { in_ns "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true; }

LAB_DIR=/run/shunt-lab

# A real HTTP server per backend: nginx serving its namespace's name and a
# 1 MiB file whose digest tests compare end to end, and /health (200, or
# 500 while www/down exists). Usage: start_http B [NS] [LISTEN]; it lives
# in $HTTP_DIR/beB (default $LAB_DIR), where scripts/scaleout.sh puts its
# own backends' (`lab.sh http B NS LISTEN`).
start_http() {
    local b=$1 base=${HTTP_DIR:-$LAB_DIR} ns=${2:-shunt-be$1} listen=${3:-"listen 80; listen [::]:80;"}
    local dir="$base/be$b"
    mkdir -p "$dir/www"
    echo "$ns" > "$dir/www/index.html"
    [ -f "$base/big.bin" ] || head -c 1048576 /dev/urandom > "$base/big.bin"
    cp "$base/big.bin" "$dir/www/big.bin"
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
        $listen
        root $dir/www;
        # Health endpoint: 500 while the file www/down exists.
        location = /health {
            if (-f \$document_root/down) { return 500; }
            return 200 "ok\\n";
        }
    }
}
CONF
    mkdir -p "$dir/tmp"
    if command -v nginx >/dev/null; then
        # Without the descriptors this script inherited: a daemon that kept
        # the lab lock of `flock /run/shunt-lab.lock …` would hold it forever.
        (
            for fd in /proc/$BASHPID/fd/*; do
                fd=${fd##*/}
                if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
            done
            exec ip netns exec "$ns" nginx -c "$dir/nginx.conf"
        )
    else
        echo "lab: nginx not installed; backends have no HTTP server (run scripts/setup.sh)" >&2
    fi
}

stop_http() {
    for b in "${BACKENDS[@]}" 6 v4srv; do
        local pidf="$LAB_DIR/be$b/nginx.pid"
        [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null || true
        rm -f "$pidf"
    done
}

down() {
    stop_http
    for ns in "$NS_CLIENT" "$NS_SHUNT" "$NS_SWITCH" "$NS_CLIENT6" "$NS_BE6" "$NS_V4SRV" \
        $(for b in "${BACKENDS[@]}"; do echo "shunt-be$b"; done); do
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
    up_translation
    [ "$MTU" = 1500 ] || set_mtu "$MTU"
    echo "lab up: namespaces $NS_CLIENT $NS_CLIENT6 $NS_SHUNT $NS_SWITCH shunt-be{1..3} $NS_BE6 $NS_V4SRV"
    echo "run Shunt: ip netns exec $NS_SHUNT shunt run --config config.toml"
}

# Hosts for NAT46/NAT64/SIIT: an IPv6-only client and an IPv6-only backend
# (also an IPv6 router towards fd00:201::/120, for translated Time
# Exceeded), and an IPv4-only HTTP server with a global-looking address
# (the well-known prefix 64:ff9b::/96 never carries RFC 1918 addresses).
up_translation() {
    ip netns add "$NS_CLIENT6"
    in_ns "$NS_CLIENT6" ip link set lo up
    in_ns "$NS_CLIENT6" sysctl -qw net.ipv4.conf.all.disable_policy=0 2>/dev/null || true
    # shellcheck disable=SC2086
    ip link add c6 netns "$NS_CLIENT6" address 02:00:00:00:06:02 $q type veth \
        peer name sh-c6 netns "$NS_SHUNT" address 02:00:00:00:06:01 $q
    in_ns "$NS_CLIENT6" ip -6 addr add fd00:6::2/64 dev c6 nodad
    in_ns "$NS_CLIENT6" ip link set c6 up
    in_ns "$NS_CLIENT6" ip -6 route add default via fd00:6::1
    in_ns "$NS_CLIENT6" ip -6 neigh replace fd00:6::1 lladdr 02:00:00:00:06:01 dev c6 nud permanent
    no_offload "$NS_CLIENT6" c6
    in_ns "$NS_SHUNT" ip -6 addr add fd00:6::1/64 dev sh-c6 nodad
    in_ns "$NS_SHUNT" ip link set sh-c6 up

    ip netns add "$NS_BE6"
    in_ns "$NS_BE6" ip link set lo up
    ip link add be0 netns "$NS_BE6" address 02:00:00:00:02:15 type veth peer name sw-be6 netns "$NS_SWITCH"
    in_ns "$NS_BE6" ip -6 addr add fd00:2::21/64 dev be0 nodad
    in_ns "$NS_BE6" ip link set be0 up
    in_ns "$NS_BE6" sysctl -qw net.ipv6.conf.all.forwarding=1
    in_ns "$NS_BE6" ip -6 route add default via fd00:2::1
    in_ns "$NS_BE6" ip -6 route add fd00:201::/120 via fd00:2::99
    in_ns "$NS_BE6" ip -6 neigh replace fd00:2::1 lladdr 02:00:00:00:02:01 dev be0 nud permanent
    no_offload "$NS_BE6" be0
    in_ns "$NS_SWITCH" ip link set sw-be6 master br0 up
    no_offload "$NS_SWITCH" sw-be6
    start_http 6 "$NS_BE6" "listen [::]:80 ipv6only=on;"

    ip netns add "$NS_V4SRV"
    in_ns "$NS_V4SRV" ip link set lo up
    ip link add be0 netns "$NS_V4SRV" address 02:00:00:00:02:50 type veth peer name sw-v4 netns "$NS_SWITCH"
    in_ns "$NS_V4SRV" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    in_ns "$NS_V4SRV" ip addr add 198.51.100.80/24 dev be0
    in_ns "$NS_V4SRV" ip link set be0 up
    in_ns "$NS_V4SRV" ip route add default via 198.51.100.1
    in_ns "$NS_V4SRV" ip neigh replace 198.51.100.1 lladdr 02:00:00:00:02:01 dev be0 nud permanent
    no_offload "$NS_V4SRV" be0
    in_ns "$NS_SWITCH" ip link set sw-v4 master br0 up
    no_offload "$NS_SWITCH" sw-v4
    in_ns "$NS_SHUNT" ip addr add 198.51.100.1/24 dev sh-be
    start_http v4srv "$NS_V4SRV" "listen 80;"

    # IPv4 clients reach the SIIT-mapped networks through Shunt.
    in_ns "$NS_CLIENT" ip route add 10.0.200.0/24 via 10.0.1.1
    in_ns "$NS_CLIENT" ip route add 10.0.201.0/24 via 10.0.1.1
}

# Every link of every lab namespace (the bridge follows its ports).
set_mtu() {
    local ns dev
    for ns in "$NS_CLIENT" "$NS_SHUNT" "$NS_SWITCH" "$NS_CLIENT6" "$NS_BE6" "$NS_V4SRV" \
        $(for b in "${BACKENDS[@]}"; do echo "shunt-be$b"; done); do
        for dev in $(in_ns "$ns" ip -o link show type veth | awk -F'[ :@]+' '{print $2}'); do
            in_ns "$ns" ip link set "$dev" mtu "$1"
        done
    done
    in_ns "$NS_SWITCH" ip link set br0 mtu "$1"
}

# The lab's namespaces and Shunt's interfaces; exit 0 only when all exist.
status() {
    local missing=0 ns
    for ns in "$NS_CLIENT" "$NS_SHUNT" "$NS_SWITCH" "$NS_CLIENT6" "$NS_BE6" "$NS_V4SRV" \
        $(for b in "${BACKENDS[@]}"; do echo "shunt-be$b"; done); do
        if [ -e "/run/netns/$ns" ]; then
            printf '%-14s up\n' "$ns"
        else
            printf '%-14s missing\n' "$ns"
            missing=$((missing + 1))
        fi
    done
    if [ -e "/run/netns/$NS_SHUNT" ]; then
        in_ns "$NS_SHUNT" ip -br link 2>/dev/null | sed 's/^/  /' || true
    fi
    if [ "$missing" -gt 0 ]; then
        echo "lab is down ($missing namespace(s) missing): shunt lab up" >&2
        return 1
    fi
    echo "lab is up"
}

case "${1:-}" in
    up) up ;;
    down) down; echo "lab down" ;;
    status) status ;;
    http) shift; start_http "$@" ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
