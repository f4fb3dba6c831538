#!/usr/bin/env python3
"""The link probe of scripts/bench-cluster-netns.sh: goodput of one TCP stream (port 5999).

    python3 scripts/bench-cluster-probe.py server HOST BYTES   # listens on HOST, prints Gbit/s received
    python3 scripts/bench-cluster-probe.py client HOST BYTES   # sends at least BYTES to HOST
"""
import socket, sys, time
mode, host, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "server":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((host, 5999)); s.listen(1)
    c, _ = s.accept(); got = 0; t0 = time.time()
    while True:
        b = c.recv(1 << 20)
        if not b: break
        got += len(b)
    print("%.3f" % (got * 8 / (time.time() - t0) / 1e9))
else:
    time.sleep(0.3); c = socket.create_connection((host, 5999)); buf = b"x" * (1 << 20); sent = 0
    while sent < n: c.sendall(buf); sent += len(buf)
    c.close()
