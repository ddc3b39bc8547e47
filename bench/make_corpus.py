#!/usr/bin/env python3
"""Deterministic benchmark corpus for bench/run.sh.

Same (--scale-mb, --seed, GENERATOR_VERSION) => byte-identical files, on any machine with
Python >= 3.9 (random.Random(seed).randbytes). No network, standard library only.

Share of the total size, by kind:
  src/   25 %  thousands of small text-like source files (1-8 KiB, pseudo-code from words)
  logs/  30 %  large text logs (repetitive lines with varying numbers), <= 32 MiB each
  bin/   25 %  incompressible binaries (seeded random bytes), <= 16 MiB each
  big/   20 %  one large, very compressible file (a repeated block with a small counter)

The corpus is generated into <out>.tmp and renamed to <out> when complete, then a stamp
file <out>.stamp records the parameters. If the stamp already matches, nothing is done.
"""

import argparse
import json
import os
import random
import shutil
import sys
import time

GENERATOR_VERSION = 1
MIB = 1024 * 1024

WORDS = (
    "let mut self fn return if else match for while loop break continue struct enum impl "
    "trait pub use mod crate super where async await move ref const static type unsafe "
    "buffer reader writer archive source destination compress level manifest checksum "
    "schedule daemon socket request response error result option some none ok err value "
    "path file dir entry header size bytes offset length count index total name time "
    "config state event progress verify rotate backup restore stream chunk block frame"
).split()
IDENTS = [w for w in WORDS if len(w) > 3]
LEVELS = ["INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"]
COMPONENTS = ["scheduler", "engine", "socket", "runner", "rotate", "verify", "http", "db"]
MESSAGES = [
    "request served in {a} ms status={b} bytes={c}",
    "archive written path=/var/backups/job{a}.tar.gz size={c} files={b}",
    "connection from 10.{d}.{b}.{d} closed after {c} bytes",
    "cache miss key=user:{c} shard={d} retry={b}",
    "job {a} progress {b}% ({c} bytes, {d} files)",
    "slow query took {a} ms rows={c} table=events_{d}",
    "rotated {b} old archives, freed {c} bytes",
]


def write_small_sources(root, budget, rng):
    """Thousands of small files spread over nested package directories."""
    written = 0
    n = 0
    while written < budget:
        pkg = os.path.join(root, "src", "pkg%03d" % (n // 200), "sub%02d" % ((n // 20) % 10))
        os.makedirs(pkg, exist_ok=True)
        target = min(rng.randint(1024, 8192), budget - written)
        lines = []
        size = 0
        while size < target:
            depth = rng.randint(0, 3)
            kind = rng.random()
            if kind < 0.15:
                line = "%sfn %s_%s(%s: %s) -> %s {" % (
                    "    " * depth, rng.choice(IDENTS), rng.choice(IDENTS),
                    rng.choice(IDENTS), rng.choice(IDENTS).title(), rng.choice(IDENTS).title())
            elif kind < 0.25:
                line = "%s// %s" % ("    " * depth, " ".join(rng.choices(WORDS, k=rng.randint(4, 12))))
            else:
                line = "%s%s = %s(%d);" % (
                    "    " * depth, "_".join(rng.choices(IDENTS, k=2)),
                    " ".join(rng.choices(WORDS, k=rng.randint(2, 8))), rng.randint(0, 99999))
            lines.append(line)
            size += len(line) + 1
        data = ("\n".join(lines) + "\n").encode()[:target]
        with open(os.path.join(pkg, "mod%05d.rs" % n), "wb") as f:
            f.write(data)
        written += len(data)
        n += 1
    return n, written


def write_logs(root, budget, rng):
    d = os.path.join(root, "logs")
    os.makedirs(d, exist_ok=True)
    per_file = 32 * MIB
    written = 0
    n = 0
    t = 1_700_000_000
    while written < budget:
        target = min(per_file, budget - written)
        size = 0
        with open(os.path.join(d, "app-%02d.log" % n), "wb") as f:
            chunk = []
            while size < target:
                t += rng.randint(0, 3)
                tm = time.gmtime(t)
                line = "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s [%s] %s\n" % (
                    tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                    rng.randint(0, 999), rng.choice(LEVELS), rng.choice(COMPONENTS),
                    rng.choice(MESSAGES).format(
                        a=rng.randint(1, 5000), b=rng.randint(0, 255),
                        c=rng.randint(0, 10_000_000), d=rng.randint(0, 63)))
                chunk.append(line)
                size += len(line)
                if len(chunk) >= 4096:
                    f.write("".join(chunk).encode())
                    chunk = []
            data = "".join(chunk).encode()
            f.write(data)
            f.truncate(target)
        written += target
        n += 1
    return n, written


def write_binaries(root, budget, rng):
    d = os.path.join(root, "bin")
    os.makedirs(d, exist_ok=True)
    per_file = 16 * MIB
    written = 0
    n = 0
    while written < budget:
        target = min(per_file, budget - written)
        with open(os.path.join(d, "blob-%02d.bin" % n), "wb") as f:
            left = target
            while left:
                step = min(left, MIB)
                f.write(rng.randbytes(step))
                left -= step
        written += target
        n += 1
    return n, written


def write_compressible(root, budget, rng):
    d = os.path.join(root, "big")
    os.makedirs(d, exist_ok=True)
    pattern = (b"backupd-bench " + rng.randbytes(18).hex().encode() + b"\n") * 64
    pattern += b"\0" * (4096 - len(pattern) % 4096)
    block_len = 64 * 1024
    base = (pattern * (block_len // len(pattern) + 1))[:block_len]
    written = 0
    with open(os.path.join(d, "compressible.dat"), "wb") as f:
        i = 0
        while written < budget:
            block = (b"%012d" % i) + base[12:]
            block = block[: budget - written]
            f.write(block)
            written += len(block)
            i += 1
    return 1, written


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="corpus directory to create")
    p.add_argument("--scale-mb", type=int, default=300, help="total size in MiB (default 300)")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--force", action="store_true", help="regenerate even if the stamp matches")
    a = p.parse_args()
    if a.scale_mb < 1:
        p.error("--scale-mb must be >= 1")

    out = os.path.abspath(a.out)
    stamp_path = out + ".stamp"
    wanted = {"generator": GENERATOR_VERSION, "scale_mb": a.scale_mb, "seed": a.seed}
    if not a.force and os.path.isdir(out) and os.path.exists(stamp_path):
        try:
            with open(stamp_path) as f:
                have = json.load(f)
        except (OSError, ValueError):
            have = {}
        if all(have.get(k) == v for k, v in wanted.items()):
            print("corpus %s is up to date (%d MiB, seed %d)" % (out, a.scale_mb, a.seed))
            return 0

    total = a.scale_mb * MIB
    budgets = {"src": total * 25 // 100, "logs": total * 30 // 100, "bin": total * 25 // 100}
    budgets["big"] = total - sum(budgets.values())

    tmp = out + ".tmp"
    for path in (tmp, out):
        if os.path.lexists(path):
            shutil.rmtree(path)
    if os.path.exists(stamp_path):
        os.remove(stamp_path)
    os.makedirs(tmp)

    started = time.monotonic()
    summary = {}
    # One independent PRNG per kind, so changing one kind's budget leaves the others alone.
    for kind, fn in (("src", write_small_sources), ("logs", write_logs),
                     ("bin", write_binaries), ("big", write_compressible)):
        rng = random.Random("%d/%s" % (a.seed, kind))
        files, size = fn(tmp, budgets[kind], rng)
        summary[kind] = {"files": files, "bytes": size}
        print("  %-4s %6d files %10.1f MiB" % (kind, files, size / MIB), flush=True)
    os.rename(tmp, out)

    stamp = dict(wanted)
    stamp["kinds"] = summary
    stamp["total_bytes"] = sum(k["bytes"] for k in summary.values())
    stamp["total_files"] = sum(k["files"] for k in summary.values())
    with open(stamp_path + ".tmp", "w") as f:
        json.dump(stamp, f, indent=1, sort_keys=True)
        f.write("\n")
    os.rename(stamp_path + ".tmp", stamp_path)
    print("corpus %s: %d files, %.1f MiB in %.1f s" % (
        out, stamp["total_files"], stamp["total_bytes"] / MIB, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
