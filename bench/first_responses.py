#!/usr/bin/env python3
"""A step of N clients at once: each opens a connection, sends one GET and waits for the whole
response, all at the same moment. Prints the seconds from the step until every client had its
first response (the slowest client's wait), then the median client's wait.

    first_responses.py PORT [N] [PATH] [HOLD-SECONDS] [STEP-TIME-FILE]

Used by bench/compare-apache.sh; stdlib only. Clients then keep their connections open (idle, as
kept-alive clients between requests) until the script ends, so the server holds N busy children.
"""
import socket
import sys
import threading
import time

port = int(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 64
path = sys.argv[3] if len(sys.argv) > 3 else "/1k.html"
hold = float(sys.argv[4]) if len(sys.argv) > 4 else 3.0

start = threading.Event()
waits = [None] * n
socks = []
lock = threading.Lock()


def client(i):
    start.wait()
    t0 = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        with lock:
            socks.append(s)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                return
            body += chunk
        waits[i] = time.monotonic() - t0
    except OSError:
        return


threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
for t in threads:
    t.start()
time.sleep(0.2)  # every thread waiting at the start line
if len(sys.argv) > 5:  # where to write the moment of the step (wall clock, for the caller)
    with open(sys.argv[5], "w") as f:
        f.write(f"{time.time():.6f}\n")
start.set()
for t in threads:
    t.join(60)
done = [w for w in waits if w is not None]
if len(done) < n:
    print(f"timeout {n - len(done)} of {n} clients got no response", file=sys.stderr)
    print("timeout timeout")
else:
    done.sort()
    print(f"{done[-1]:.3f} {done[len(done) // 2]:.3f}")
time.sleep(hold)
for s in socks:
    s.close()
