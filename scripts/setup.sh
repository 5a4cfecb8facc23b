#!/usr/bin/env bash
# Installs the system packages Shunt's build, lab and tests need (Debian).
# Idempotent; run as root.
set -euo pipefail

PACKAGES=(
    clang llvm libbpf-dev linux-libc-dev   # XDP program build (build.rs)
    iproute2 ethtool iputils-ping          # lab namespaces, offload settings
    iputils-tracepath                      # tracepath across the translator (lab_xlat)
    iperf3 nginx-light curl                # real peers for lab tests
    hping3 python3-scapy                   # attack traffic for lab_attack (SYN flood, forged frames)
    tcpdump tshark                         # checking packets on the wire
    bird2 exabgp                           # scale-out lab: router and node BGP speakers
)

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs packages with apt-get)" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
fi
# Optional: 2 MiB hugepages for UMEM. Shunt falls back to 4 KiB pages if the
# reservation fails, so this is best effort.
if [ "$(cat /proc/sys/vm/nr_hugepages)" -lt 64 ]; then
    echo 64 > /proc/sys/vm/nr_hugepages 2>/dev/null || true
fi
echo "setup.sh: ok"
