#!/usr/bin/env python3
"""A TCP relay that delays every byte by a fixed time in each direction: link latency for
machines whose kernel has no `netem` qdisc (scripts/lan/run.sh uses it only then).

    delay_relay.py --delay-ms D LISTEN_HOST:PORT=TARGET_HOST:PORT [...]

Each mapping listens on LISTEN and forwards every accepted connection to TARGET. Bytes read from
either side are released to the other side D ms after they were read (order kept), so a
request/response pair sees an extra round-trip time of 2 D. It does not limit bandwidth (the
harness shapes the rate with `tbf` on the links the relayed connection crosses). Standard library
only; one thread per direction, blocking sockets, 256 KiB reads.
"""
import argparse
import collections
import socket
import sys
import threading
import time

CHUNK = 256 * 1024


def pump(src, dst, delay, done):
    """Moves bytes src -> dst, each chunk held until `delay` seconds after it was read."""
    queue = collections.deque()
    cond = threading.Condition()
    closed = [False]

    def reader():
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                with cond:
                    queue.append((time.monotonic() + delay, data))
                    cond.notify()
        except OSError:
            pass
        with cond:
            closed[0] = True
            cond.notify()

    threading.Thread(target=reader, daemon=True).start()
    try:
        while True:
            with cond:
                while not queue and not closed[0]:
                    cond.wait()
                if not queue:
                    break
                due, data = queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with cond:
                queue.popleft()
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    done.release()


def serve(listen, target, delay):
    host, port = listen.rsplit(":", 1)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(16)
    thost, tport = target.rsplit(":", 1)
    while True:
        client, _ = srv.accept()
        # The target may not listen yet (the roles start in any order): retry for 30 s, as a
        # direct dial would.
        upstream, deadline = None, time.monotonic() + 30
        while upstream is None:
            try:
                upstream = socket.create_connection((thost, int(tport)), timeout=30)
                upstream.settimeout(None)
            except OSError as e:
                if time.monotonic() > deadline:
                    print(f"delay_relay: {listen} -> {target}: {e}", file=sys.stderr, flush=True)
                    break
                time.sleep(0.2)
        if upstream is None:
            client.close()
            continue
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        done = threading.Semaphore(0)

        def close_both(a=client, b=upstream, d=done):
            d.acquire()
            d.acquire()
            a.close()
            b.close()

        threading.Thread(target=pump, args=(client, upstream, delay, done), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, delay, done), daemon=True).start()
        threading.Thread(target=close_both, daemon=True).start()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("mappings", nargs="+", help="LISTEN_HOST:PORT=TARGET_HOST:PORT")
    args = ap.parse_args()
    for m in args.mappings:
        listen, target = m.split("=")
        threading.Thread(target=serve, args=(listen, target, args.delay_ms / 1e3),
                         daemon=True).start()
    print(f"delay_relay: {len(args.mappings)} relays, {args.delay_ms} ms each way", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
