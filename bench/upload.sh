#!/usr/bin/env bash
# Upload benchmark (issue 12): how fast backupd copies archives offsite and how much memory the
# daemon needs for it, against s3s-fs on loopback (bench/s3_server.rs, the tests' S3 server as a
# program) with the corpus of bench/run.sh. See bench/README.md.
#
#   bash bench/upload.sh                                   # ~300 MiB corpus, 3 repeats
#   BENCH_SCALE_MB=20 BENCH_REPEAT=1 bash bench/upload.sh  # quick smoke test
#
# Environment: BENCH_SCALE_MB, BENCH_REPEAT, BENCH_SEED, BENCH_CORPUS, BENCH_SKIP_BUILD as in
# run.sh; BENCH_OUT (default bench/out-upload); BENCH_PART_SIZE (default 16MiB) and
# BENCH_CONCURRENCY (default 4), the remote's part_size and upload_concurrency.
set -euo pipefail
export LC_ALL=C
unset BACKUPD_HOME BACKUPD_SOCKET AWS_PROFILE AWS_ENDPOINT_URL AWS_SESSION_TOKEN

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/.." && pwd)"
SCALE_MB="${BENCH_SCALE_MB:-300}"
REPEAT="${BENCH_REPEAT:-3}"
SEED="${BENCH_SEED:-20240601}"
OUT="${BENCH_OUT:-$BENCH_DIR/out-upload}"
CORPUS="${BENCH_CORPUS:-$OUT/corpus}"
SKIP_BUILD="${BENCH_SKIP_BUILD:-0}"
PART_SIZE="${BENCH_PART_SIZE:-16MiB}"
CONCURRENCY="${BENCH_CONCURRENCY:-4}"
ACCESS_KEY=bench-key
SECRET_KEY=bench-secret-not-used-elsewhere

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for v in SCALE_MB REPEAT SEED CONCURRENCY; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
((REPEAT >= 1)) || die "BENCH_REPEAT must be >= 1"
for cmd in python3 awk find; do
    command -v "$cmd" >/dev/null || die "'$cmd' not found in PATH"
done

# ---------------------------------------------------------------- build
if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building release binaries and the S3 server"
    (cd "$REPO_ROOT" && cargo build --release -p backupd -p backupctl &&
        cargo build --release -p backupd-suite --example bench_s3_server)
fi
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$REPO_ROOT/$TARGET_DIR"
BACKUPD="$TARGET_DIR/release/backupd"
BACKUPCTL="$TARGET_DIR/release/backupctl"
S3_SERVER="$TARGET_DIR/release/examples/bench_s3_server"
for bin in "$BACKUPD" "$BACKUPCTL" "$S3_SERVER"; do
    [[ -x "$bin" ]] || die "missing $bin"
done

# ---------------------------------------------------------------- corpus, scratch, cleanup
mkdir -p "$OUT" "$(dirname "$CORPUS")"
python3 "$BENCH_DIR/make_corpus.py" --out "$CORPUS" --scale-mb "$SCALE_MB" --seed "$SEED" >&2
CORPUS="$(cd "$CORPUS" && pwd)"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "$OUT/run.XXXXXX")"
HOME_DIR="$(mktemp -d "${TMPDIR:-/tmp}/backupd-upload.XXXXXX")"
S3_ROOT="$WORK/s3"
mkdir -p "$S3_ROOT/backups" "$WORK/dest"
DAEMON_PID=""
SERVER_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -z "$DAEMON_PID" ]] || { kill -TERM "$DAEMON_PID" 2>/dev/null || true; wait "$DAEMON_PID" 2>/dev/null || true; }
    [[ -z "$SERVER_PID" ]] || { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
    ((rc == 0)) || { log "--- daemon log (tail)"; tail -n 20 "$WORK/backupd.log" >&2 || true; }
    rm -rf "$WORK" "$HOME_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$S3_SERVER" "$S3_ROOT" "$PORT" "$ACCESS_KEY" "$SECRET_KEY" >"$WORK/s3.log" 2>&1 &
SERVER_PID=$!

cat >"$HOME_DIR/backupd.toml" <<EOF
[remote.bench]
endpoint = "http://127.0.0.1:$PORT"
allow_http = true
region = "us-east-1"
bucket = "backups"
prefix = "bench"
part_size = "$PART_SIZE"
upload_concurrency = $CONCURRENCY
EOF
AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY \
    "$BACKUPD" --home "$HOME_DIR" --socket "$HOME_DIR/backupd.sock" >"$WORK/backupd.log" 2>&1 &
DAEMON_PID=$!
ctl() { (cd "$WORK" && "$BACKUPCTL" --home "$HOME_DIR" --socket "$HOME_DIR/backupd.sock" "$@"); }
for ((i = 0; i < 200; i++)); do
    ctl status >/dev/null 2>&1 && break
    kill -0 "$DAEMON_PID" 2>/dev/null || die "backupd exited during startup"
    sleep 0.1
done
vm_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$DAEMON_PID/status"; }

# ---------------------------------------------------------------- measurements
# One local run first: the daemon's peak with compression and no upload is the base.
ctl --json run --sources "$CORPUS" --destination "$WORK/dest" --name base --compression none >/dev/null
BASE_KB=$(vm_kb VmHWM)
log "daemon base peak RSS (one local run): $((BASE_KB / 1024)) MiB"
RAW="$WORK/uploads.tsv"
: >"$RAW"
for ((rep = 1; rep <= REPEAT; rep++)); do
    rm -rf "$WORK/dest"/*
    # --compression none: the upload, not the compressor, sets the pace.
    ctl --json run --sources "$CORPUS" --destination "$WORK/dest" --name "up$rep" \
        --compression none --offsite bench >"$WORK/run.json" ||
        die "backupctl run (repeat $rep) failed: $(cat "$WORK/run.json")"
    python3 - "$WORK/run.json" "$rep" >>"$RAW" <<'EOF'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
up = [u for s in r["data"]["sources"] for u in s.get("offsite", []) if not u.get("already_there")]
if not up or not all(u["ok"] for u in up):
    sys.exit("upload failed: %s" % up)
print("%s\t%d\t%d\t%d" % (sys.argv[2], sum(u["bytes"] for u in up), sum(u["duration_ms"] for u in up),
                          sum(u["retries"] for u in up)))
EOF
    log "  [$rep/$REPEAT] $(tail -n 1 "$RAW")"
done
PEAK_KB=$(vm_kb VmHWM)

python3 - "$RAW" "$BASE_KB" "$PEAK_KB" "$PART_SIZE" "$CONCURRENCY" <<'EOF' | tee "$OUT/results.txt"
import re, statistics, sys
raw, base_kb, peak_kb, part, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
rows = [line.split("\t") for line in open(raw) if line.strip()]
mib = 1024 * 1024
rates = [int(b) / mib / (int(ms) / 1000) for _, b, ms, _ in rows]
n, unit = re.fullmatch(r"(\d+)\s*([KMG]i?B)?", part).groups()
part_bytes = int(n) * {None: 1, "KiB": 1024, "MiB": mib, "GiB": 1024 * mib}.get(unit, 1)
bound_kb = base_kb + part_bytes * (conc + 1) // 1024
print("upload to s3s-fs on loopback, part_size %s, upload_concurrency %d" % (part, conc))
print("archive bytes per run: %d (%.1f MiB)" % (int(rows[0][1]), int(rows[0][1]) / mib))
print("throughput MiB/s per run: %s; median %.1f" % (" ".join("%.1f" % r for r in rates), statistics.median(rates)))
print("retries: %s" % " ".join(r[3] for r in rows))
print("daemon peak RSS: base %.1f MiB (one local run), with uploads %.1f MiB" % (base_kb / 1024, peak_kb / 1024))
print("goal: peak <= base + part_size x (concurrency + 1) = %.1f MiB: %s"
      % (bound_kb / 1024, "met" if peak_kb <= bound_kb else "NOT met"))
EOF
