#!/usr/bin/env python3
"""UDP echo peers for the jumbo-frame tests.

server ADDR4 ADDR6 PORT: sends every datagram back to its sender.
client ADDR PORT SIZE COUNT: sends COUNT random SIZE-byte datagrams with
"don't fragment" set (a datagram that does not fit the path fails instead
of being split), checks each echo byte for byte; prints "ok COUNT".
probe ADDR PORT SIZE: sends one SIZE-byte datagram with "don't fragment"
set, then again until the stack refuses it (EMSGSIZE: an ICMP error on the
path lowered the path MTU), for 3 s at most; prints "mtu N", the path MTU
the socket learned; fails when the stack never learned one.
"""
import errno
import time
import os
import select
import socket
import sys

IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2
IPV6_DONTFRAG = 62
IP_MTU, IPV6_MTU = 14, 24
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO = 23, 2


def server(a4, a6, port):
    s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s4.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    s4.bind((a4, port))
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s6.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
    s6.bind((a6, port))
    while True:
        for s in select.select([s4, s6], [], [])[0]:
            data, peer = s.recvfrom(65535)
            s.sendto(data, peer)


def client(addr, port, size, count):
    v6 = ":" in addr
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    if v6:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
    else:
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    s.settimeout(2)
    s.connect((addr, port))
    for i in range(count):
        data = os.urandom(size)
        s.send(data)
        try:
            got = s.recv(65535)
        except socket.timeout:
            sys.exit(f"datagram {i}: no echo within 2 s")
        if got != data:
            sys.exit(f"datagram {i}: echo differs ({len(got)} bytes back, {size} sent)")
    print(f"ok {count}")


def probe(addr, port, size):
    v6 = ":" in addr
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    if v6:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
    else:
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    s.connect((addr, port))
    data = os.urandom(size)
    deadline = time.monotonic() + 3
    sent = 0
    while time.monotonic() < deadline:
        try:
            s.send(data)
            sent += 1
        except OSError as e:
            if e.errno != errno.EMSGSIZE:
                raise
            mtu = s.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU) if v6 else s.getsockopt(socket.IPPROTO_IP, IP_MTU)
            print(f"mtu {mtu} after {sent} sent")
            return
        time.sleep(0.1)
    sys.exit(f"{sent} datagrams of {size} bytes sent, the path MTU never dropped")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "probe":
        probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
