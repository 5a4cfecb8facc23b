#!/usr/bin/env python3
"""UDP echo peers for the jumbo-frame tests.

server ADDR4 ADDR6 PORT: sends every datagram back to its sender.
client ADDR PORT SIZE COUNT: sends COUNT random SIZE-byte datagrams with
"don't fragment" set (a datagram that does not fit the path fails instead
of being split), checks each echo byte for byte; prints "ok COUNT".
"""
import os
import select
import socket
import sys

IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2
IPV6_DONTFRAG = 62


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


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
