#!/usr/bin/env bash
# Benchmark: backupd (gzip -6, zstd -3, none) against GNU tar -czf, tar | pigz -p N -6
# (when pigz is installed), tar | zstd -3 -T0 and tar -cf, on one deterministic corpus.
# See bench/README.md.
#
#   bash bench/run.sh                                   # ~300 MiB corpus, 3 repeats
#   BENCH_SCALE_MB=20 BENCH_REPEAT=1 bash bench/run.sh  # quick smoke test
#
# Environment:
#   BENCH_SCALE_MB    corpus size in MiB (default 300)
#   BENCH_REPEAT      runs per method; the median is reported (default 3)
#   BENCH_HASH_PAIRS  hashed/not hashed pairs of the SHA-256 rows per repeat (default 3)
#   BENCH_SEED        corpus PRNG seed (default 20240601)
#   BENCH_OUT         output dir (default bench/out, git-ignored)
#   BENCH_CORPUS      corpus dir (default $BENCH_OUT/corpus)
#   BENCH_SKIP_BUILD  1 = use the existing target/release binaries, don't run cargo
#   BENCH_SMALL_FILES number of small files (0-4 KiB) for the many-files case; 0 skips it
#                     (default 200000)
#   BENCH_LARGE_GB    size in GiB of the single sparse file of the large-file case; 0 skips it
#                     (default 4)
set -euo pipefail
export LC_ALL=C   # "." as the decimal separator in $EPOCHREALTIME, plain tool output
# Compressor settings from the caller's environment would skew the baselines.
unset GZIP ZSTD_CLEVEL ZSTD_NBTHREADS BACKUPD_HOME BACKUPD_SOCKET

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/.." && pwd)"
SCALE_MB="${BENCH_SCALE_MB:-300}"
REPEAT="${BENCH_REPEAT:-3}"
HASH_PAIRS="${BENCH_HASH_PAIRS:-3}"
SEED="${BENCH_SEED:-20240601}"
OUT="${BENCH_OUT:-$BENCH_DIR/out}"
CORPUS="${BENCH_CORPUS:-$OUT/corpus}"
SKIP_BUILD="${BENCH_SKIP_BUILD:-0}"
SMALL_FILES="${BENCH_SMALL_FILES:-200000}"
LARGE_GB="${BENCH_LARGE_GB:-4}"
GZIP_LEVEL=6
ZSTD_LEVEL=3

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for v in SCALE_MB REPEAT HASH_PAIRS SEED SMALL_FILES LARGE_GB; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
((SCALE_MB >= 1)) || die "BENCH_SCALE_MB must be >= 1"
((REPEAT >= 1)) || die "BENCH_REPEAT must be >= 1"
for cmd in python3 tar gzip zstd awk find; do
    command -v "$cmd" >/dev/null || die "'$cmd' not found in PATH"
done
HAVE_TIME=0
if command -v /usr/bin/time >/dev/null 2>&1; then HAVE_TIME=1; fi
HAVE_PIGZ=0
if command -v pigz >/dev/null 2>&1; then HAVE_PIGZ=1; fi
HAVE_RESTIC=0
if command -v restic >/dev/null 2>&1; then HAVE_RESTIC=1; fi
HAVE_BORG=0
if command -v borg >/dev/null 2>&1; then HAVE_BORG=1; fi
CORES=$(nproc)

# ---------------------------------------------------------------- build
if [[ "$SKIP_BUILD" != 1 ]]; then
    command -v cargo >/dev/null || die "'cargo' not found in PATH"
    log "building release binaries (cargo build --release -p backupd -p backupctl --example hash_cost)"
    (cd "$REPO_ROOT" && cargo build --release -p backupd -p backupctl &&
        cargo build --release -p backupd --example hash_cost)
fi
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$REPO_ROOT/$TARGET_DIR"
BACKUPD="$TARGET_DIR/release/backupd"
BACKUPCTL="$TARGET_DIR/release/backupctl"
[[ -x "$BACKUPD" && -x "$BACKUPCTL" ]] || die "missing $BACKUPD or $BACKUPCTL"
HASH_COST="$TARGET_DIR/release/examples/hash_cost"
[[ -x "$HASH_COST" ]] || log "no $HASH_COST: the SHA-256 cost rows are skipped"

# ---------------------------------------------------------------- corpus
mkdir -p "$OUT" "$(dirname "$CORPUS")"
log "corpus: $CORPUS ($SCALE_MB MiB, seed $SEED)"
python3 "$BENCH_DIR/make_corpus.py" --out "$CORPUS" --scale-mb "$SCALE_MB" --seed "$SEED" >&2
CORPUS="$(cd "$CORPUS" && pwd)"
CORPUS_PARENT="$(dirname "$CORPUS")"
CORPUS_NAME="$(basename "$CORPUS")"
read -r CORPUS_FILES CORPUS_BYTES < <(find "$CORPUS" -type f -printf '%s\n' |
    awk '{ n++; s += $1 } END { printf "%d %d\n", n, s }')

# ---------------------------------------------------------------- scratch space + cleanup
OUT="$(cd "$OUT" && pwd)"
# Archives go next to the corpus (same file system for every method). Daemon homes go under
# /tmp so the socket path stays well below the 108-byte sun_path limit.
WORK="$(mktemp -d "$OUT/run.XXXXXX")"
HOMES="$(mktemp -d "${TMPDIR:-/tmp}/backupd-bench.XXXXXX")"
RAW="$WORK/raw.tsv"
# The in-memory rows (none, restore) need a tmpfs with room for two corpora (BENCH_TMPFS,
# default /dev/shm; empty to skip them).
TMPFS="${BENCH_TMPFS-/dev/shm}"
TMPFS_WORK=""
if [[ -n "$TMPFS" && "$(stat -f -c %T "$TMPFS" 2>/dev/null)" == tmpfs ]] &&
    (($(df -Pk "$TMPFS" | awk 'NR == 2 { print $4 }') > 3 * SCALE_MB * 1024)); then
    TMPFS_WORK="$(mktemp -d "$TMPFS/backupd-bench.XXXXXX")"
else
    log "no tmpfs with room at '$TMPFS': the in-memory restore rows are skipped"
fi
declare -A DAEMON_PID=()
declare -A DAEMON_HOME=()

stop_daemon() {
    local tag=$1 pid=${DAEMON_PID[$1]:-}
    [[ -n "$pid" ]] || return 0
    unset "DAEMON_PID[$tag]"
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do            # up to 30 s for a graceful stop
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "backupd ($tag, pid $pid) ignored SIGTERM for 30 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local tag
    for tag in "${!DAEMON_PID[@]}"; do stop_daemon "$tag"; done
    if ((rc != 0)); then
        for f in "$WORK"/backupd-*.log; do
            [[ -s "$f" ]] && { log "--- $f (tail)"; tail -n 20 "$f" >&2; }
        done
    fi
    rm -rf "$WORK" "$HOMES" ${TMPFS_WORK:+"$TMPFS_WORK"}
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ctl() {  # ctl TAG ARGS... : backupctl against the daemon TAG, from a neutral cwd (no .env)
    local tag=$1; shift
    (cd "$WORK" && "$BACKUPCTL" --home "${DAEMON_HOME[$tag]}" \
        --socket "${DAEMON_HOME[$tag]}/backupd.sock" "$@")
}

start_daemon() {  # one fresh daemon per compression, so each VmHWM is attributable
    local tag=$1 home="$HOMES/$1"
    mkdir -p "$home"
    DAEMON_HOME[$tag]="$home"
    # The large-file case times the read path through its sparse file's holes, as through a
    # file without holes; stored sparse, nothing of it would be read.
    if [[ $tag == zstd ]]; then
        echo "sparse_files = false" >"$home/backupd.toml"
    fi
    "$BACKUPD" --home "$home" --socket "$home/backupd.sock" >"$WORK/backupd-$tag.log" 2>&1 &
    DAEMON_PID[$tag]=$!
    local i
    for ((i = 0; i < 200; i++)); do
        if ctl "$tag" status >/dev/null 2>&1; then
            log "backupd ($tag) ready, pid ${DAEMON_PID[$tag]}"
            return 0
        fi
        kill -0 "${DAEMON_PID[$tag]}" 2>/dev/null || die "backupd ($tag) exited during startup"
        sleep 0.1
    done
    die "backupd ($tag) did not answer within 20 s"
}

vm_kb() {  # vm_kb PID FIELD -> kB value of FIELD (VmHWM, VmRSS) in /proc/PID/status
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

now() { echo "$EPOCHREALTIME"; }
# Untimed, before every timed command: the dirty pages the previous one left are written out
# first, so that no method pays for another's writeback (each still pays for its own fsync).
settle() { sync; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
file_size() { stat -c %s "$1"; }

record() {  # record METHOD REP SECONDS BYTES RSS_KB DAEMON_MS
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RAW"
    log "  [$2/$REPEAT] $(printf '%-22s' "$1") $3 s  $4 bytes"
}

M_BGZ="backupd gzip -$GZIP_LEVEL"
M_BGA="backupd gzip -$GZIP_LEVEL + age"
M_TGZ="tar -czf (gzip -6)"
M_BZS="backupd zstd -$ZSTD_LEVEL"
M_TZS="tar | zstd -$ZSTD_LEVEL -T0"
M_PGZ="tar | pigz -p $CORES -$GZIP_LEVEL"
M_BNO="backupd none"
M_TAR="tar -cf"
M_TSY="tar -cf + sync"
M_BNM="backupd none (tmpfs)"
M_TAM="tar -cf (tmpfs)"
M_HSH="tar crate to file, hashed"
M_HPL="tar crate to file, not hashed"
M_BVE="backupd verify (gzip)"
M_TTZ="tar -tzf"
M_BRE="backupd restore (gzip)"
M_TXZ="tar -xzf"
M_BRN="backupd restore --no-sync (gzip)"
M_TXS="tar -xzf + sync"
M_BRM="backupd restore (gzip, tmpfs)"
M_TXM="tar -xzf (tmpfs)"
M_RES="restic backup"
M_BORG="borg create -C zstd,3"
M_SBG="backupd gzip -$GZIP_LEVEL (small files)"
M_STG="tar -czf (small files)"
M_LBZ="backupd zstd -$ZSTD_LEVEL (large file)"
M_LTZ="tar | zstd -$ZSTD_LEVEL -T0 (large file)"

bench_backupd() {  # bench_backupd TAG METHOD COMPRESSION LEVEL REP SOURCE [RUN ARGS...]
    bench_backupd_into "$WORK" "$@"
}

bench_backupd_into() {  # bench_backupd_into DIR TAG METHOD COMPRESSION LEVEL REP SOURCE [ARGS...]
    local into=$1; shift
    local tag=$1 method=$2 comp=$3 level=$4 rep=$5 source=$6
    local extra=("${@:7}")
    local dest="$into/dest-$tag" json="$WORK/run-$tag.json" t0 t1 rc=0
    rm -rf "$dest"; mkdir -p "$dest"
    settle
    t0=$(now)
    local level_args=()
    [[ -z "$level" ]] || level_args=(--level "$level")   # none takes no level
    ctl "$tag" --json run --sources "$source" --destination "$dest" \
        --compression "$comp" "${level_args[@]}" "${extra[@]}" >"$json" || rc=$?
    t1=$(now)
    if ((rc != 0)); then
        cat "$json" >&2
        die "backupctl run ($method, repeat $rep) exited with status $rc"
    fi
    # Cross-check the report: every source ok, the archive exists with the reported size.
    local info size ms
    info=$(python3 - "$json" <<'EOF'
import json, os, sys
line = open(sys.argv[1]).read().strip().splitlines()[-1]
r = json.loads(line)
d = r.get("data") or {}
srcs = d.get("sources") or []
bad = [s for s in srcs if not s.get("ok")]
if not r.get("ok") or d.get("failed") or not srcs or bad:
    sys.exit("backupd reported a failure: %s" % line)
for s in srcs:
    if os.path.getsize(s["archive"]) != s["size_bytes"]:
        sys.exit("archive %s: size on disk != size_bytes" % s["archive"])
print(sum(s["size_bytes"] for s in srcs), sum(s.get("duration_ms", 0) for s in srcs))
EOF
    ) || die "backupctl run ($method, repeat $rep): bad report"
    read -r size ms <<<"$info"
    record "$method" "$rep" "$(elapsed "$t0" "$t1")" "$size" "" "$ms"
    rm -rf "$dest"
}

bench_tar_gzip() {  # bench_tar_gzip REP
    local rep=$1 out="$WORK/tar.tar.gz" t0 t1 rss=""
    rm -f "$out"
    settle
    t0=$(now)
    if ((HAVE_TIME)); then
        /usr/bin/time -f %M -o "$WORK/rss.tar" tar -czf "$out" -C "$CORPUS_PARENT" "$CORPUS_NAME"
    else
        tar -czf "$out" -C "$CORPUS_PARENT" "$CORPUS_NAME"
    fi
    t1=$(now)
    # tar's own peak; its gzip child is folded in as a max (wait4 semantics), not a sum.
    if ((HAVE_TIME)); then rss=$(tail -n 1 "$WORK/rss.tar"); fi
    record "$M_TGZ" "$rep" "$(elapsed "$t0" "$t1")" "$(file_size "$out")" "$rss" ""
    rm -f "$out"
}

bench_tar_zstd() {  # bench_tar_zstd REP
    local rep=$1 out="$WORK/tar.tar.zst" t0 t1 rss=""
    rm -f "$out"
    settle
    t0=$(now)
    if ((HAVE_TIME)); then
        /usr/bin/time -f %M -o "$WORK/rss.tar" tar -cf - -C "$CORPUS_PARENT" "$CORPUS_NAME" |
            /usr/bin/time -f %M -o "$WORK/rss.zstd" zstd "-$ZSTD_LEVEL" -T0 -q -o "$out"
    else
        tar -cf - -C "$CORPUS_PARENT" "$CORPUS_NAME" | zstd "-$ZSTD_LEVEL" -T0 -q -o "$out"
    fi
    t1=$(now)
    # Both processes run at once, so the pipeline's peak is the sum.
    if ((HAVE_TIME)); then
        rss=$(($(tail -n 1 "$WORK/rss.tar") + $(tail -n 1 "$WORK/rss.zstd")))
    fi
    record "$M_TZS" "$rep" "$(elapsed "$t0" "$t1")" "$(file_size "$out")" "$rss" ""
    rm -f "$out"
}

bench_tar_pigz() {  # bench_tar_pigz REP
    local rep=$1 out="$WORK/tar-pigz.tar.gz" t0 t1 rss=""
    rm -f "$out"
    settle
    t0=$(now)
    if ((HAVE_TIME)); then
        /usr/bin/time -f %M -o "$WORK/rss.tar" tar -cf - -C "$CORPUS_PARENT" "$CORPUS_NAME" |
            /usr/bin/time -f %M -o "$WORK/rss.pigz" pigz -p "$CORES" "-$GZIP_LEVEL" >"$out"
    else
        tar -cf - -C "$CORPUS_PARENT" "$CORPUS_NAME" | pigz -p "$CORES" "-$GZIP_LEVEL" >"$out"
    fi
    t1=$(now)
    if ((HAVE_TIME)); then
        rss=$(($(tail -n 1 "$WORK/rss.tar") + $(tail -n 1 "$WORK/rss.pigz")))
    fi
    record "$M_PGZ" "$rep" "$(elapsed "$t0" "$t1")" "$(file_size "$out")" "$rss" ""
    rm -f "$out"
}

bench_hash_cost() {  # bench_hash_cost REP: the none case's writes with and without SHA-256
    local rep=$1 out="$WORK/hash-cost" pair order mode method secs
    # The difference is a few hundredths of a second, below one run's noise on a shared disk:
    # HASH_PAIRS pairs per repeat, the first of each pair alternating.
    for ((pair = 1; pair <= HASH_PAIRS; pair++)); do
        (((rep + pair) % 2)) && order="plain hashed" || order="hashed plain"
        for mode in $order; do
            [[ $mode == hashed ]] && method=$M_HSH || method=$M_HPL
            rm -rf "$out"; mkdir -p "$out"
            settle
            # The program times itself: its figure leaves out its own start.
            secs=$("$HASH_COST" "$mode" "$CORPUS" "$out" 2>/dev/null) ||
                die "hash_cost $mode (repeat $rep) failed"
            record "$method" "$rep" "$secs" "$(file_size "$out"/*.tar)" "" ""
            rm -rf "$out"
        done
    done
}

bench_tar_plain() {  # bench_tar_plain REP [DIR METHOD]: the copy limit for --compression none
    local rep=$1 out="${2:-$WORK}/tar.tar" method=${3:-$M_TAR} t0 t1 rss=""
    rm -f "$out"
    settle
    t0=$(now)
    if ((HAVE_TIME)); then
        /usr/bin/time -f %M -o "$WORK/rss.tar" tar -cf "$out" -C "$CORPUS_PARENT" "$CORPUS_NAME"
        rss=$(tail -n 1 "$WORK/rss.tar")
    else
        tar -cf "$out" -C "$CORPUS_PARENT" "$CORPUS_NAME"
    fi
    t1=$(now)
    record "$method" "$rep" "$(elapsed "$t0" "$t1")" "$(file_size "$out")" "$rss" ""
    rm -f "$out"
}

bench_tar_synced() {  # bench_tar_synced REP: tar -cf made durable, as backupd makes archives
    local rep=$1 out="$WORK/tar-synced.tar" t0 t1
    rm -f "$out"
    settle
    t0=$(now)
    tar -cf "$out" -C "$CORPUS_PARENT" "$CORPUS_NAME"
    sync "$out"    # fsync of the file (coreutils >= 8.24)
    t1=$(now)
    record "$M_TSY" "$rep" "$(elapsed "$t0" "$t1")" "$(file_size "$out")" "" ""
    rm -f "$out"
}

timed() {  # timed METHOD REP SIZE COMMAND...: records the wall time of COMMAND
    local method=$1 rep=$2 size=$3 t0 t1
    shift 3
    settle
    t0=$(now)
    "$@" >/dev/null || die "$method (repeat $rep) failed"
    t1=$(now)
    record "$method" "$rep" "$(elapsed "$t0" "$t1")" "$size" "" ""
}

bench_read_back() {  # bench_read_back REP: verify vs tar -tzf, restore vs tar -xzf, same archive
    local rep=$1 dest="$WORK/dest-read" json="$WORK/run-read.json" archive size
    # Each repeat restores into folders of its own, all deleted after the last repeat: where
    # ext4 runs without a journal (as on the machine of the last run), creating a file skips
    # the inodes freed in the last minute or more (ext4's recently_deleted()), reading their
    # inode tables, so a restore right after deleting the previous one's 17,000 files took
    # 10-18 s instead of 2 s, for backupd and tar alike.
    local restored="$WORK/restored.$rep" extracted="$WORK/extracted.$rep"
    local unsynced="$WORK/restored-nosync.$rep" synced="$WORK/extracted-sync.$rep"
    rm -rf "$dest"; mkdir -p "$dest"
    ctl gzip --json run --sources "$CORPUS" --destination "$dest" \
        --compression gzip --level "$GZIP_LEVEL" >"$json" || die "backupctl run (read-back) failed"
    archive=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["data"]["sources"][0]["archive"])' "$json")
    size=$(file_size "$archive")
    timed "$M_BVE" "$rep" "$size" ctl gzip verify "$archive"
    timed "$M_TTZ" "$rep" "$size" tar -tzf "$archive"
    mkdir -p "$restored" "$extracted" "$unsynced" "$synced"
    # backupd's restore answers once what it wrote is on disk (one syncfs), tar -x never
    # syncs: each is timed against both `tar -xzf` and `tar -xzf` followed by `sync -f` of
    # its file system, and `restore --no-sync` against `tar -xzf`. A restore's writes land
    # beside the one before's writeback: each repeat starts with the next method.
    local methods=(restore tar nosync tarsync) i m
    for ((i = 0; i < ${#methods[@]}; i++)); do
        m=${methods[(i + rep) % ${#methods[@]}]}
        case $m in
            restore) timed "$M_BRE" "$rep" "$size" ctl gzip restore "$archive" --to "$restored" ;;
            tar) timed "$M_TXZ" "$rep" "$size" tar -xzf "$archive" -C "$extracted" ;;
            nosync) timed "$M_BRN" "$rep" "$size" ctl gzip restore "$archive" --no-sync \
                --to "$unsynced" ;;
            tarsync) timed "$M_TXS" "$rep" "$size" bash -c 'tar -xzf "$1" -C "$2" && sync -f "$2"' \
                _ "$archive" "$synced" ;;
        esac
    done
    if [[ -n "$TMPFS_WORK" ]]; then
        # Into memory: the restore path itself, with the disk's write speed taken out.
        mkdir -p "$TMPFS_WORK/restored" "$TMPFS_WORK/extracted"
        timed "$M_BRM" "$rep" "$size" ctl gzip restore "$archive" --to "$TMPFS_WORK/restored"
        timed "$M_TXM" "$rep" "$size" tar -xzf "$archive" -C "$TMPFS_WORK/extracted"
        rm -rf "$TMPFS_WORK/restored" "$TMPFS_WORK/extracted"
    fi
    rm -rf "$dest"
}

bench_restic() {  # bench_restic REP: first full backup into a fresh repository
    local rep=$1 repo="$WORK/restic-repo" t0 t1
    rm -rf "$repo"
    RESTIC_PASSWORD=bench restic init --repo "$repo" -q >/dev/null
    settle
    t0=$(now)
    RESTIC_PASSWORD=bench restic backup --repo "$repo" -q "$CORPUS" >/dev/null ||
        die "restic backup (repeat $rep) failed"
    t1=$(now)
    record "$M_RES" "$rep" "$(elapsed "$t0" "$t1")" "$(du -sb "$repo" | cut -f1)" "" ""
    rm -rf "$repo"
}

bench_borg() {  # bench_borg REP: first full backup into a fresh, unencrypted repository
    local rep=$1 repo="$WORK/borg-repo" t0 t1
    rm -rf "$repo"
    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes borg init -e none "$repo" >/dev/null
    settle
    t0=$(now)
    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes borg create -C zstd,3 "$repo::first" \
        "$CORPUS" >/dev/null || die "borg create (repeat $rep) failed"
    t1=$(now)
    record "$M_BORG" "$rep" "$(elapsed "$t0" "$t1")" "$(du -sb "$repo" | cut -f1)" "" ""
    rm -rf "$repo"
}

make_small_files() {  # make_small_files DIR N: N files of 0-4 KiB, 1,000 per folder
    local dir=$1 count=$2
    if [[ -f "$dir.stamp" && "$(cat "$dir.stamp")" == "small $count $SEED" ]]; then return 0; fi
    rm -rf "$dir" "$dir.tmp" "$dir.stamp"
    python3 - "$dir.tmp" "$count" "$SEED" <<'PY'
import os, random, sys
out, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
words = [b"fn", b"let", b"mut", b"return", b"match", b"struct", b"impl", b"self", b"0", b"1",
         b"value", b"error", b"(", b")", b"{", b"}", b";", b"\n", b"    "]
for i in range(count):
    folder = os.path.join(out, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(folder)
    size = rng.randrange(0, 4097)
    text = b" ".join(rng.choice(words) for _ in range(size // 3 + 1))[:size]
    with open(os.path.join(folder, "f%06d.txt" % i), "wb") as f:
        f.write(text)
PY
    mv "$dir.tmp" "$dir"
    echo "small $count $SEED" >"$dir.stamp"
}

bench_tar_gzip_of() {  # bench_tar_gzip_of METHOD REP DIR
    local method=$1 rep=$2 dir=$3 out="$WORK/tar-of.tar.gz" t0 t1
    rm -f "$out"
    settle
    t0=$(now)
    tar -czf "$out" -C "$(dirname "$dir")" "$(basename "$dir")"
    t1=$(now)
    record "$method" "$rep" "$(elapsed "$t0" "$t1")" "$(file_size "$out")" "" ""
    rm -f "$out"
}

bench_tar_zstd_of() {  # bench_tar_zstd_of METHOD REP DIR
    local method=$1 rep=$2 dir=$3 out="$WORK/tar-of.tar.zst" t0 t1
    rm -f "$out"
    settle
    t0=$(now)
    tar -cf - -C "$(dirname "$dir")" "$(basename "$dir")" | zstd "-$ZSTD_LEVEL" -T0 -q -o "$out"
    t1=$(now)
    record "$method" "$rep" "$(elapsed "$t0" "$t1")" "$(file_size "$out")" "" ""
    rm -f "$out"
}

# ---------------------------------------------------------------- machine info
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
[[ -n "$CPU_MODEL" ]] || CPU_MODEL="$(uname -m) (no model name in /proc/cpuinfo)"
MACHINE="machine: nproc=$(nproc), cpu=$CPU_MODEL, kernel $(uname -r), load at start $(cut -d' ' -f1-3 /proc/loadavg)"
TOOLS="tools: $("$BACKUPD" --version | head -n 1), $(tar --version | head -n 1), $(gzip --version | head -n 1), zstd $(zstd -V | grep -o 'v[0-9.]*' | head -n 1)"
if ((HAVE_PIGZ)); then
    TOOLS="$TOOLS, $(pigz --version 2>&1 | head -n 1)"
else
    log "pigz not found: the tar | pigz row is skipped"
fi

# ---------------------------------------------------------------- measurements
AGE_PUBLIC=$("$BACKUPCTL" keygen --out "$WORK/age-key.txt")
start_daemon gzip
start_daemon zstd
start_daemon none
log "warm-up: reading the corpus once (tar piped to wc; tar skips reading when writing to /dev/null)"
WARM_BYTES=$(tar -cf - -C "$CORPUS_PARENT" "$CORPUS_NAME" | wc -c)
log "  tar stream: $WARM_BYTES bytes"

: >"$RAW"
for ((rep = 1; rep <= REPEAT; rep++)); do
    # Interleaved, so drift (thermal, background load) hits every method alike.
    # The same run encrypted with age: what encryption costs on top of gzip. The two take
    # turns at going first: the second of two runs in a row is slower whichever it is
    # (bench/README, "Last run"), and age always second looked 1.25x gzip.
    if ((rep % 2)); then
        bench_backupd gzip "$M_BGZ" gzip "$GZIP_LEVEL" "$rep" "$CORPUS"
        bench_backupd gzip "$M_BGA" gzip "$GZIP_LEVEL" "$rep" "$CORPUS" --encrypt-to "$AGE_PUBLIC"
    else
        bench_backupd gzip "$M_BGA" gzip "$GZIP_LEVEL" "$rep" "$CORPUS" --encrypt-to "$AGE_PUBLIC"
        bench_backupd gzip "$M_BGZ" gzip "$GZIP_LEVEL" "$rep" "$CORPUS"
    fi
    bench_tar_gzip "$rep"
    bench_backupd zstd "$M_BZS" zstd "$ZSTD_LEVEL" "$rep" "$CORPUS"
    bench_tar_zstd "$rep"
    if ((HAVE_PIGZ)); then bench_tar_pigz "$rep"; fi
    bench_backupd none "$M_BNO" none "" "$rep" "$CORPUS"
    bench_tar_plain "$rep"
    bench_tar_synced "$rep"
    if [[ -n "$TMPFS_WORK" ]]; then
        # Into memory: the copy path itself, where backupd's fsync before publishing costs nothing.
        bench_backupd_into "$TMPFS_WORK" none "$M_BNM" none "" "$rep" "$CORPUS"
        bench_tar_plain "$rep" "$TMPFS_WORK" "$M_TAM"
    fi
    if [[ -x "$HASH_COST" ]]; then bench_hash_cost "$rep"; fi
done
# What users would pick instead: the first full backup of the same corpus. A loop of their
# own, as for the read-back rows: what their runs leave behind (hundreds of MiB freed, their
# caches) no longer lands on the next repeat's first method, which is what `sync` can't undo.
for ((rep = 1; rep <= REPEAT; rep++)); do
    if ((HAVE_RESTIC)); then bench_restic "$rep"; fi
    if ((HAVE_BORG)); then bench_borg "$rep"; fi
done
for ((rep = 1; rep <= REPEAT; rep++)); do
    bench_read_back "$rep"
done
rm -rf "$WORK"/restored.* "$WORK"/extracted.* "$WORK"/restored-nosync.* "$WORK"/extracted-sync.*
((HAVE_RESTIC)) || log "restic not found: its row is skipped"
((HAVE_BORG)) || log "borg not found: its row is skipped"

SMALL_DIR="$OUT/small-files"
SMALL_BYTES=0
if ((SMALL_FILES > 0)); then
    log "many small files: $SMALL_FILES files of 0-4 KiB in $SMALL_DIR"
    make_small_files "$SMALL_DIR" "$SMALL_FILES"
    SMALL_BYTES=$(find "$SMALL_DIR" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    tar -cf - -C "$OUT" small-files | wc -c >/dev/null    # warm the cache
    for ((rep = 1; rep <= REPEAT; rep++)); do
        bench_backupd gzip "$M_SBG" gzip "$GZIP_LEVEL" "$rep" "$SMALL_DIR"
        bench_tar_gzip_of "$M_STG" "$rep" "$SMALL_DIR"
    done
fi
LARGE_DIR="$WORK/large-file"
LARGE_BYTES=0
if ((LARGE_GB > 0)); then
    # Sparse: no disk space, and the read path (not the disk) is what is measured: the zstd
    # daemon reads its holes as zeros (sparse_files = false, see start_daemon).
    LARGE_BYTES=$((LARGE_GB * 1024 * 1024 * 1024))
    log "one large file: $LARGE_GB GiB, sparse, in $LARGE_DIR"
    mkdir -p "$LARGE_DIR"
    truncate -s "$LARGE_BYTES" "$LARGE_DIR/large.img"
    for ((rep = 1; rep <= REPEAT; rep++)); do
        bench_backupd zstd "$M_LBZ" zstd "$ZSTD_LEVEL" "$rep" "$LARGE_DIR"
        bench_tar_zstd_of "$M_LTZ" "$rep" "$LARGE_DIR"
    done
    rm -rf "$LARGE_DIR"
fi

HWM_GZ=$(vm_kb "${DAEMON_PID[gzip]}" VmHWM)
HWM_ZS=$(vm_kb "${DAEMON_PID[zstd]}" VmHWM)
HWM_NO=$(vm_kb "${DAEMON_PID[none]}" VmHWM)
stop_daemon gzip
stop_daemon zstd
stop_daemon none

# ---------------------------------------------------------------- report
RESULTS="$OUT/results.txt"
python3 - "$RAW" "$CORPUS_BYTES" "$HWM_GZ" "$HWM_ZS" "$M_BGZ" "$M_TGZ" "$M_BZS" "$M_TZS" \
    "$HWM_NO" "$M_PGZ" "$M_BNO" "$M_TAR" "$M_BVE" "$M_TTZ" "$M_BRE" "$M_TXZ" "$M_BGA" \
    "$M_RES" "$M_BORG" "$M_SBG" "$M_STG" "$M_LBZ" "$M_LTZ" "$SMALL_FILES" "$SMALL_BYTES" \
    "$LARGE_BYTES" "$M_TSY" "$M_BRM" "$M_TXM" "$M_HSH" "$M_HPL" "$M_BNM" "$M_TAM" \
    "$M_BRN" "$M_TXS" >"$WORK/table.txt" <<'EOF'
import statistics, sys
raw, corpus_bytes, hwm_gz, hwm_zs, m_bgz, m_tgz, m_bzs, m_tzs = sys.argv[1:9]
hwm_no, m_pgz, m_bno, m_tar, m_bve, m_ttz, m_bre, m_txz, m_bga = sys.argv[9:18]
(m_res, m_borg, m_sbg, m_stg, m_lbz, m_ltz, small_files, small_bytes, large_bytes,
 m_tsy, m_brm, m_txm, m_hsh, m_hpl, m_bnm, m_tam, m_brn, m_txs) = sys.argv[18:]
corpus_bytes = int(corpus_bytes)
# The rows of the extra cases read their own data, not the corpus.
data_bytes = {m_sbg: int(small_bytes), m_stg: int(small_bytes),
              m_lbz: int(large_bytes), m_ltz: int(large_bytes)}
rows = {}
for line in open(raw):
    method, rep, secs, size, rss, ms = line.rstrip("\n").split("\t")
    rows.setdefault(method, []).append((float(secs), int(size), rss, ms))
order = [(m_bgz, m_tgz, hwm_gz), (m_bga, m_bgz, None), (m_tgz, m_tgz, None), (m_pgz, m_tgz, None),
         (m_bzs, m_tzs, hwm_zs), (m_tzs, m_tzs, None), (m_bno, m_tar, hwm_no), (m_tar, m_tar, None),
         (m_tsy, m_tar, None), (m_bnm, m_tam, None), (m_tam, m_tam, None), (m_hsh, m_hpl, None), (m_hpl, m_hpl, None),
         (m_bve, m_ttz, None), (m_ttz, m_ttz, None), (m_bre, m_txz, None), (m_txz, m_txz, None),
         (m_brn, m_txz, None), (m_txs, m_txz, None),
         (m_brm, m_txm, None), (m_txm, m_txm, None),
         (m_res, m_bzs, None), (m_borg, m_bzs, None),
         (m_sbg, m_stg, None), (m_stg, m_stg, None), (m_lbz, m_ltz, None), (m_ltz, m_ltz, None)]
order = [o for o in order if o[0] in rows]
med = {m: statistics.median(r[0] for r in rows[m]) for m in rows}
mib = 1024 * 1024
head = ("method", "median s", "MiB/s", "archive MiB", "% of corpus", "time vs tool", "peak RSS MiB")
out = []
for method, base, hwm in order:
    runs = rows[method]
    s = med[method]
    size = statistics.median(r[1] for r in runs)
    if hwm is not None:
        rss = "%.1f (daemon)" % (int(hwm) / 1024)
    else:
        vals = [int(r[2]) for r in runs if r[2]]
        rss = "%.1f" % (max(vals) / 1024) if vals else "-"
    ratio = "%.2fx" % (s / med[base]) if base in med and med[base] > 0 else "-"
    read = data_bytes.get(method, corpus_bytes)
    out.append((method, "%.3f" % s, "%.1f" % (read / mib / s if s > 0 else 0),
                "%.1f" % (size / mib), "%.1f%%" % (100.0 * size / read) if read else "-",
                ratio, rss))
widths = [max(len(str(r[i])) for r in [head] + out) for i in range(len(head))]
fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                          for i, (c, w) in enumerate(zip(r, widths)))
print(fmt(head))
print("  ".join("-" * w for w in widths))
for r in out:
    print(fmt(r))
print()
print("per run (s): " + "; ".join(
    "%s: %s" % (m, " ".join("%.3f" % r[0] for r in rows[m])) for m, _, _ in order))
ms = {m: [r[3] for r in rows[m]] for m in (m_bgz, m_bzs, m_bno)}
print("daemon-reported duration_ms: " + "; ".join("%s: %s" % (m, " ".join(v)) for m, v in ms.items()))
print()
print("targets (issue 11; ratio = median time of backupd / median time of the tool;")
print("  paired = median of the ratios of runs made side by side, for how much drift between")
print("  repeats moved the ratio; the verdict is the ratio's):")
def paired_ratio(ours, theirs):
    a, b = [r[0] for r in rows[ours]], [r[0] for r in rows[theirs]]
    if len(a) != len(b) or not all(b):
        return ""
    return "  (paired %.2fx)" % statistics.median(x / y for x, y in zip(a, b))
def target(label, ours, theirs, goal, ok, side_by_side=True):
    if ours not in med or theirs not in med:
        print("  %-44s not measured (%s missing)" % (label, theirs if theirs not in med else ours))
        return
    r = med[ours] / med[theirs]
    print("  %-44s %.2fx  goal %s: %s%s" % (label, r, goal, "met" if ok(r) else "NOT met",
                                           paired_ratio(ours, theirs) if side_by_side else ""))
target("gzip -6: backupd vs %s" % m_pgz, m_bgz, m_pgz, "<= 0.67x (1.5x faster)", lambda r: r <= 1 / 1.5)
target("age: %s vs %s" % (m_bga, m_bgz), m_bga, m_bgz, "<= 1.10x", lambda r: r <= 1.10)
target("zstd -3: backupd vs %s" % m_tzs, m_bzs, m_tzs, "<= 1.10x", lambda r: r <= 1.10)
target("none: backupd vs %s" % m_tar, m_bno, m_tar, "<= 1.15x", lambda r: r <= 1.15)
# Not an issue target: both sides durable (backupd fsyncs every archive before publishing it).
target("none: backupd vs %s (both on disk)" % m_tsy, m_bno, m_tsy, "<= 1.15x",
       lambda r: r <= 1.15)
target("none into tmpfs: backupd vs %s" % m_tam, m_bnm, m_tam, "<= 1.15x",
       lambda r: r <= 1.15)
if m_hsh in med and m_hpl in med and m_bno in med:
    cost = (med[m_hsh] - med[m_hpl]) / med[m_bno]
    hashed, plain = [r[0] for r in rows[m_hsh]], [r[0] for r in rows[m_hpl]]
    pairs = ""
    if len(hashed) == len(plain):
        pairs = "  (paired %.1f%%)" % (
            100 * statistics.median(h - p for h, p in zip(hashed, plain)) / med[m_bno])
    print("  %-44s %.1f%%  goal <= 5%%: %s%s" % ("SHA-256: (hashed - not hashed) / backupd none",
          100 * cost, "met" if cost <= 0.05 else "NOT met", pairs))
target("verify vs %s (same archive)" % m_ttz, m_bve, m_ttz, "<= 1.00x", lambda r: r <= 1.0)
target("restore vs %s (same archive)" % m_txz, m_bre, m_txz, "<= 1.00x", lambda r: r <= 1.0)
# Not issue targets: like with like, durable against durable and unsynced against unsynced.
target("restore vs %s (both on disk)" % m_txs, m_bre, m_txs, "<= 1.00x", lambda r: r <= 1.0)
target("restore --no-sync vs %s" % m_txz, m_brn, m_txz, "<= 1.00x", lambda r: r <= 1.0)
target("restore vs %s (same archive)" % m_txm, m_brm, m_txm, "<= 1.00x", lambda r: r <= 1.0)
for tool in (m_res, m_borg):
    # Run in a loop of their own, not beside backupd's.
    target("first full backup: backupd zstd vs %s" % tool, m_bzs, tool, "< 1.00x",
           lambda r: r < 1.0, side_by_side=False)
target("%s small files: backupd gzip vs tar -czf" % small_files, m_sbg, m_stg, "<= 1.00x",
       lambda r: r <= 1.0)
if m_sbg in med and m_stg in med:
    n = int(small_files)
    print("    per file: backupd %.1f us, tar -czf %.1f us"
          % (med[m_sbg] / n * 1e6, med[m_stg] / n * 1e6))
target("large sparse file: backupd zstd vs tar | zstd", m_lbz, m_ltz, "<= 1.10x",
       lambda r: r <= 1.10)
for label, hwm in (("gzip", hwm_gz), ("zstd", hwm_zs), ("none", hwm_no)):
    print("  peak RSS of the %s daemon %.1f MiB  goal <= 64 MiB: %s"
          % (label, int(hwm) / 1024, "met" if int(hwm) <= 64 * 1024 else "NOT met"))
EOF

{
    echo "backupd benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "$MACHINE"
    echo "$TOOLS"
    echo "corpus: $CORPUS, $CORPUS_FILES files, $CORPUS_BYTES bytes ($SCALE_MB MiB, seed $SEED); repeats: $REPEAT (median shown)"
    echo "time vs tool: median time / median time of the GNU tool with the same codec (tar -czf for gzip, tar | zstd for zstd)"
    if ((HAVE_TIME)); then
        echo "peak RSS: backupd = VmHWM of a fresh daemon per codec after all its runs; tar -czf = /usr/bin/time %M (max of tar, gzip); tar | zstd = tar + zstd"
    else
        echo "peak RSS: backupd = VmHWM of a fresh daemon per codec; /usr/bin/time not found, tool RSS skipped"
    fi
    echo
    cat "$WORK/table.txt"
} >"$RESULTS"
cp "$RAW" "$OUT/results.tsv"
echo
cat "$RESULTS"
log "written: $RESULTS (raw per-run rows: $OUT/results.tsv)"
