#!/usr/bin/env python3
"""Daemon-scale benchmark: many schedules and many clients against one running backupd.

    python3 bench/scale.py --socket HOME/backupd.sock --pid PID [--schedules 10000] [--clients 1000]

Talks the line-JSON protocol on the socket directly (one request per connection, as backupctl
does). Creates --schedules daily schedules (due six hours from now, so none runs during the
test) over a scratch source folder, then measures: the latency of the last 100 creates, of
`list` at that size, of a create plus delete at that size, of --clients connections sending
`status` at once (p50/p99, and how many got an answer), and the daemon's CPU time while idle
for 10 s. Leaves the schedules in place: use a throwaway home.
"""

import argparse
import datetime
import json
import os
import socket
import statistics
import tempfile
import threading
import time


def request(sock_path, obj, timeout=120.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    s.sendall((json.dumps(obj) + "\n").encode())
    buf = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
        lines = buf.split(b"\n")
        # The response is the last line; event lines (if any) come before it.
        done = [json.loads(line) for line in lines[:-1] if line.strip()]
        if done and "ok" in done[-1]:
            s.close()
            return done[-1]
    s.close()
    raise RuntimeError("no response to %r" % obj)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000.0, out


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--schedules", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=1000)
    args = ap.parse_args()

    source = tempfile.mkdtemp(prefix="backupd-scale-src.")
    due = (datetime.datetime.now() + datetime.timedelta(hours=6)).strftime("%H:%M")
    create_ms = []
    t_start = time.perf_counter()
    for i in range(args.schedules):
        ms, r = timed(lambda: request(args.socket, {"cmd": "create",
                                                    "spec": "%s;%s;s%05d" % (source, due, i)}))
        if not r.get("ok"):
            raise SystemExit("create %d failed: %s" % (i, r))
        create_ms.append(ms)
        if (i + 1) % 1000 == 0:
            print("  %d schedules, last create %.1f ms" % (i + 1, ms), flush=True)
    fill_s = time.perf_counter() - t_start

    list_ms = []
    for _ in range(10):
        ms, r = timed(lambda: request(args.socket, {"cmd": "list"}))
        assert r.get("ok") and len(r["data"]["schedules"]) >= args.schedules, str(r)[:200]
        list_ms.append(ms)

    add_ms, del_ms = [], []
    for i in range(10):
        ms, r = timed(lambda: request(args.socket, {"cmd": "create",
                                                    "spec": "%s;%s;extra%d" % (source, due, i)}))
        assert r.get("ok"), r
        add_ms.append(ms)
        ms, r = timed(lambda: request(args.socket, {"cmd": "delete", "name": "extra%d" % i}))
        assert r.get("ok"), r
        del_ms.append(ms)

    results, errors = [], []
    barrier = threading.Barrier(args.clients)

    def client():
        try:
            barrier.wait()
            ms, r = timed(lambda: request(args.socket, {"cmd": "status"}))
            (results if r.get("ok") else errors).append(ms)
        except Exception as e:  # noqa: BLE001 - every failure counts
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    hz = os.sysconf("SC_CLK_TCK")
    before = cpu_ticks(args.pid)
    time.sleep(10)
    idle_cpu_ms = (cpu_ticks(args.pid) - before) * 1000.0 / hz

    print("schedules: %d (filled in %.1f s)" % (args.schedules, fill_s))
    print("create, last 100 at ~%d schedules: p50 %.1f ms, p99 %.1f ms"
          % (args.schedules, pct(create_ms[-100:], 50), pct(create_ms[-100:], 99)))
    print("list at %d schedules: p50 %.1f ms, max %.1f ms"
          % (args.schedules, pct(list_ms, 50), max(list_ms)))
    print("create at %d: p50 %.1f ms; delete: p50 %.1f ms"
          % (args.schedules, pct(add_ms, 50), pct(del_ms, 50)))
    if results:
        print("%d clients at once: %d answered, %d failed; p50 %.1f ms, p99 %.1f ms"
              % (args.clients, len(results), len(errors), pct(results, 50), pct(results, 99)))
    else:
        print("%d clients at once: none answered (%s)" % (args.clients, errors[:3]))
    print("daemon CPU while idle for 10 s: %.0f ms" % idle_cpu_ms)


if __name__ == "__main__":
    main()
