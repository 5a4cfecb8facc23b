#!/usr/bin/env python3
"""Lab peers for the fragment tests.

server ADDR4 ADDR6 PORT: answers each datagram "SIZE SEED ..." with SIZE
bytes: the pattern of SEED (its kernel fragments what exceeds the MTU).
client VIP PORT REQ SIZE SEED: sends a REQ-byte request (its kernel
fragments it), checks the reply is exactly the pattern; prints "ok N".
"""
import select
import socket
import sys


def pattern(size, seed):
    return bytes((i * 7 + seed) % 251 for i in range(size))


def server(a4, a6, port):
    s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s4.bind((a4, port))
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s6.bind((a6, port))
    while True:
        for s in select.select([s4, s6], [], [])[0]:
            data, peer = s.recvfrom(65535)
            size, seed = (int(x) for x in data.split(b" ")[:2])
            s.sendto(pattern(size, seed), peer)


def client(vip, port, req, size, seed):
    fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.connect((vip, port))
    s.settimeout(2)
    head = f"{size} {seed} ".encode()
    s.send(head + b"x" * max(0, req - len(head)))
    got = s.recv(65535)
    want = pattern(size, seed)
    if got != want:
        sys.exit(f"reply of {len(got)} bytes, want {len(want)}")
    print("ok", len(got))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        client(sys.argv[2], int(sys.argv[3]), *(int(x) for x in sys.argv[4:7]))
