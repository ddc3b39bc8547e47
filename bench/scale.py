#!/usr/bin/env python3
"""Daemon-scale benchmark: many schedules, many clients, many runs due at once.

Starts the release `backupd` on a temporary home and measures, over the raw socket:
  1. `list` and `create`/`delete` latency with BENCH_SCHEDULES (10,000) schedules,
  2. CPU the idle daemon uses with them between due times,
  3. BENCH_CLIENTS (1,000) clients connecting at once: how many get their answer, p50/p99,
     sending `hello` with the default per-uid cap and with the cap raised above the client
     count, and sending `status` (which looks at every schedule) with BENCH_SCHEDULES of them,
  4. BENCH_DUE (100) schedules due in the same minute: all run, none lost.
The schedule file is written before the daemon starts (10,000 creates would each rewrite it).
Usage: python3 bench/scale.py  (after `cargo build --release -p backupd -p backupctl`)
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BENCH_BIN", os.path.join(ROOT, "target", "release"))
SCHEDULES = int(os.environ.get("BENCH_SCHEDULES", "10000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "1000"))
DUE = int(os.environ.get("BENCH_DUE", "100"))
REPEAT = 20


def request(path, obj, timeout=60.0):
    """One request on its own connection; the answer line as a dict and the seconds until its
    last byte arrived (parsing it here is the client's time, not the daemon's)."""
    start = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall((json.dumps(obj) + "\n").encode())
        chunks = []
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    took = time.perf_counter() - start
    return json.loads(b"".join(chunks)), took


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


class Daemon:
    def __init__(self, home, config=""):
        self.home = home
        self.socket = os.path.join(home, "backupd.sock")
        os.makedirs(home, mode=0o700, exist_ok=True)
        if config:
            with open(os.path.join(home, "backupd.toml"), "w") as f:
                f.write(config)
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "backupd"), "--home", home, "--socket", self.socket],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while True:
            try:
                request(self.socket, {"cmd": "hello"}, timeout=5)
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise SystemExit("backupd did not start")
                time.sleep(0.05)

    def cpu_ticks(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        try:
            request(self.socket, {"cmd": "stop"}, timeout=30)
        except OSError:
            pass
        self.proc.wait(timeout=60)


def far_time(now):
    """A daily time at least six hours from now: nothing falls due during the benchmark."""
    return (now + timedelta(hours=6)).strftime("%H:%M")


def write_schedules(home, source, count):
    now = datetime.now(timezone.utc)
    created = now.isoformat().replace("+00:00", "Z")
    schedules = [
        {
            "id": i + 1,
            "name": f"s{i:05}",
            "sources": [source],
            "kind": "daily",
            "time": far_time(datetime.now()),
            "created": created,
        }
        for i in range(count)
    ]
    with open(os.path.join(home, "schedules.json"), "w") as f:
        json.dump({"version": 1, "next_id": count + 1, "schedules": schedules}, f)


def many_schedules(work, source):
    home = os.path.join(work, "many")
    os.makedirs(home, mode=0o700)
    write_schedules(home, source, SCHEDULES)
    size = os.path.getsize(os.path.join(home, "schedules.json"))
    started = time.perf_counter()
    daemon = Daemon(home)
    print(f"start with {SCHEDULES} schedules ({size / 1e6:.1f} MB file): "
          f"{ms(time.perf_counter() - started)}")
    try:
        lists = []
        for _ in range(REPEAT):
            answer, took = request(daemon.socket, {"cmd": "list"})
            assert answer["ok"] and len(answer["data"]["schedules"]) == SCHEDULES, answer
            lists.append(took)
        creates, deletes = [], []
        for i in range(REPEAT):
            spec = f"{source};{far_time(datetime.now())};extra{i}"
            answer, took = request(daemon.socket, {"cmd": "create", "spec": spec})
            assert answer["ok"], answer
            creates.append(took)
        for i in range(REPEAT):
            answer, took = request(daemon.socket, {"cmd": "delete", "name": f"extra{i}"})
            assert answer["ok"], answer
            deletes.append(took)
        ticks = daemon.cpu_ticks()
        time.sleep(10)
        idle = daemon.cpu_ticks() - ticks
        print(f"list:   median {ms(statistics.median(lists))}, max {ms(max(lists))}")
        print(f"create: median {ms(statistics.median(creates))}, max {ms(max(creates))}")
        print(f"delete: median {ms(statistics.median(deletes))}, max {ms(max(deletes))}")
        print(f"idle:   {idle} CPU ticks in 10 s with {SCHEDULES} schedules")
        print(f"peak RSS: {daemon.rss_kib() / 1024:.1f} MiB")
    finally:
        daemon.stop()


def clients_at_once(work, label, config, cmd="hello", schedules=0, source=None):
    home = os.path.join(work, label.replace(" ", "-"))
    if schedules:
        os.makedirs(home, mode=0o700)
        write_schedules(home, source, schedules)
    daemon = Daemon(home, config)
    latencies, refused, failed = [], [], []
    barrier = threading.Barrier(CLIENTS)
    lock = threading.Lock()

    def client():
        barrier.wait()
        try:
            answer, took = request(daemon.socket, {"cmd": cmd}, timeout=120)
            with lock:
                (latencies if answer["ok"] else refused).append(
                    took if answer["ok"] else answer["error"]["code"])
        except (OSError, ValueError) as e:
            with lock:
                failed.append(type(e).__name__)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    daemon.stop()
    codes = {code: refused.count(code) for code in set(refused)}
    line = f"{CLIENTS} clients sending {cmd} at once ({label}): {len(latencies)} served"
    if latencies:
        line += f", p50 {ms(percentile(latencies, 50))}, p99 {ms(percentile(latencies, 99))}"
    line += f"; refused {codes or 0}; no answer {len(failed)}"
    print(line)


def due_together(work, source):
    home = os.path.join(work, "due")
    os.makedirs(home, mode=0o700)
    daemon = Daemon(home)
    # Two minutes ahead: every create is in before the minute comes.
    due = (datetime.now() + timedelta(minutes=2)).replace(second=0, microsecond=0)
    try:
        for i in range(DUE):
            spec = f"{source};{due.strftime('%H:%M')};due{i:03}"
            answer, _ = request(daemon.socket, {"cmd": "create", "spec": spec})
            assert answer["ok"], answer
        backups = os.path.join(home, "backups")
        deadline = due + timedelta(minutes=5)
        while datetime.now() < deadline:
            manifests = [n for n in os.listdir(backups) if n.endswith(".json")]
            if len(manifests) >= DUE:
                break
            time.sleep(0.2)
        done = datetime.now()
        names = {n.rsplit("_", 2)[0] for n in os.listdir(backups) if n.endswith(".json")}
        print(f"{DUE} schedules due at {due.strftime('%H:%M')}: {len(names)} ran, "
              f"last manifest {(done - due).total_seconds():.1f} s after the due minute")
    finally:
        daemon.stop()


def main():
    if not os.path.exists(os.path.join(BIN, "backupd")):
        sys.exit(f"no backupd in {BIN}: cargo build --release -p backupd -p backupctl")
    work = tempfile.mkdtemp(prefix="bkd-scale-")
    os.chmod(work, 0o700)
    try:
        source = os.path.join(work, "src")
        os.makedirs(source)
        with open(os.path.join(source, "a.txt"), "w") as f:
            f.write("scale\n")
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
        many_schedules(work, source)
        clients_at_once(work, "default caps", "")
        raised = f"max_connections_per_uid = {CLIENTS + 16}\n"
        clients_at_once(work, "cap raised", raised)
        clients_at_once(work, f"{SCHEDULES} schedules", raised, "status", SCHEDULES, source)
        due_together(work, source)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
