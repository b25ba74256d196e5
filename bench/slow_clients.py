#!/usr/bin/env python3
"""Slow clients against one server, and a legitimate client beside them (issue 25). Not a test.

    bench/slow_clients.py PORT MODE N SECONDS
      MODE heads: N connections each send a request head one header line every 3 s, never ending it
      MODE idle:  N connections each send one request, read the answer, then stay open and silent
    A slow connection the server closes (a 408, a keep-alive timeout) connects again, as an
    attacker's would.
    Meanwhile a legitimate client opens a new connection every 0.5 s and asks GET /1k.html
    (5 s timeout). Prints one line: "asked A answered B p50-ms X p99-ms Y slow-open Z" (Z: slow
    connections open at the end).
"""
import asyncio
import sys
import time

HOST = "127.0.0.1"


CONNECTED = [0]


async def reconnecting(port, stop, behave):
    """A slow connection as an attacker's: `behave(reader, writer)` until the server closes it,
    then connect again, until `stop`."""
    while not stop.is_set():
        try:
            r, w = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        CONNECTED[0] += 1
        try:
            await behave(r, w)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError):
            pass
        finally:
            CONNECTED[0] -= 1
            w.close()
        await asyncio.sleep(0.1)


async def slow_head(port, stop):
    """Trickles a request head, a header line every 3 s."""

    async def behave(r, w):
        w.write(b"GET /1k.html HTTP/1.1\r\nHost: slow\r\n")
        await w.drain()
        i = 0
        while not stop.is_set():
            closed = asyncio.create_task(r.read(65536))
            done, _ = await asyncio.wait({closed}, timeout=3)
            if done:
                return  # answered (408) or closed
            closed.cancel()
            i += 1
            w.write(b"X-Slow-%d: %d\r\n" % (i, i))
            await w.drain()

    await reconnecting(port, stop, behave)


async def idle_keepalive(port, stop):
    """Sends one request, reads its answer, then stays silent."""

    async def behave(r, w):
        w.write(b"GET /1k.html HTTP/1.1\r\nHost: idle\r\n\r\n")
        await w.drain()
        await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
        while await r.read(65536):
            pass  # the body, then nothing until the server closes

    await reconnecting(port, stop, behave)


async def one_request(port):
    start = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
        w.write(b"GET /1k.html HTTP/1.1\r\nHost: legit\r\nConnection: close\r\n\r\n")
        await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5 - (time.monotonic() - start))
        w.close()
        return time.monotonic() - start if head.startswith(b"HTTP/1.1 200") else None
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        return None


async def main(port, mode, n, seconds):
    stop = asyncio.Event()
    make = slow_head if mode == "heads" else idle_keepalive
    slow = []
    for _ in range(n):
        slow.append(asyncio.create_task(make(port, stop)))
        await asyncio.sleep(0.002)
    await asyncio.sleep(1)
    legit = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        legit.append(asyncio.create_task(one_request(port)))
        await asyncio.sleep(0.5)
    results = await asyncio.gather(*legit)
    open_slow = CONNECTED[0]
    stop.set()
    for t in slow:
        t.cancel()
    ok = sorted(r for r in results if r is not None)
    pct = lambda p: (ok[min(len(ok) - 1, int(p * len(ok)))] * 1000) if ok else float("nan")
    print(f"asked {len(results)} answered {len(ok)} p50-ms {pct(0.5):.1f} p99-ms {pct(0.99):.1f} slow-open {open_slow}")


if __name__ == "__main__":
    port, mode, n, seconds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    asyncio.run(main(port, mode, n, seconds))
