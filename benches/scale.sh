#!/usr/bin/env bash
# Issue 7's memory and store-size figures. The release `baton serve` runs in its own process
# (so its RSS is the server's alone), driven by `baton load` in another process.
#
#   benches/scale.sh memory    # RSS with 100,000 live conversations (default config); then, with
#                              # idle_passivate_secs=10, RSS while 300,000 conversations pass through
#   benches/scale.sh million   # fill a data dir with 1,000,000 conversations (about 8 minutes),
#                              # then startup time on it and throughput on it vs a fresh dir
#   benches/scale.sh million-memory   # RSS with 100,000 live conversations on the 1M dir
#   benches/scale.sh all       # all three (about 30 minutes on 2 cores)
#
# Environment: OUT (target/scale: the log scale.log, JSON reports, data dirs; the 1M dir is kept
# and reused by `million` once filled, delete $OUT/million to fill again; the throughput runs use
# a copy of it, so it needs twice its size free), SECS (20: seconds per
# throughput run), REPEATS (3), SETTLE (15: seconds the server idles after start before a
# throughput run, long enough for the provider-id sweep baton runs at boot to finish on the 1M
# dir; 0 measures from the start). Needs cargo, curl, jq and python3. Waits while a soak or a build runs.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/scale}
SECS=${SECS:-20}
REPEATS=${REPEATS:-3}
SETTLE=${SETTLE:-15}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BATON=$OUT/baton
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
SERVER=

log() { echo "[$(date +%T)] $*" | tee -a "$OUT/scale.log" >&2; }

wait_for_quiet() {
    while pgrep -f soak >/dev/null || pgrep -x rustc >/dev/null; do
        echo "a soak run or a build is on; waiting" >&2
        sleep 20
    done
    log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# Build once and run a copy, so that edits to the tree during the runs change nothing.
wait_for_quiet
cargo build --release --bin baton 2>&1 | tail -1 >&2
cp target/release/baton "$BATON"

# start DIR [VAR=VALUE…]: starts the server on DIR; sets SERVER (pid) and STARTUP_MS (from
# spawn until /healthz answers 200, polled every 10 ms).
start() {
    local dir=$1 t0 t1
    shift
    t0=$(date +%s%N)
    env "$@" "$BATON" serve --addr "127.0.0.1:$PORT" --data-dir "$dir" >>"$OUT/server.log" 2>&1 &
    SERVER=$!
    until curl -sf -o /dev/null "$URL/healthz"; do
        kill -0 "$SERVER" 2>/dev/null || { log "the server died; see $OUT/server.log"; exit 1; }
        sleep 0.01
    done
    t1=$(date +%s%N)
    STARTUP_MS=$(((t1 - t0) / 1000000))
}

# stop [SIGNAL]: sends SIGNAL (TERM), then waits for the server to exit; sets STOP_MS (from the
# signal to the exit).
stop() {
    local t0
    t0=$(date +%s%N)
    kill -"${1:-TERM}" "$SERVER"
    wait "$SERVER" || true
    STOP_MS=$((($(date +%s%N) - t0) / 1000000))
    SERVER=
}
SAMPLER=
trap '[[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null; [[ -n $SERVER ]] && kill -TERM "$SERVER" 2>/dev/null; true' EXIT

# Drops DIR's files from the page cache (only those), so the next start reads them from disk.
evict() {
    python3 - "$1" <<'EOF'
import os, sys
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        fd = os.open(os.path.join(root, name), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
EOF
}

# The server's CPU seconds by thread name (digits dropped) and its storage I/O bytes, as JSON.
usage() {
    python3 - "$SERVER" <<'EOF'
import json, os, re, sys
pid = sys.argv[1]
out = {}
for task in os.listdir(f"/proc/{pid}/task"):
    try:
        stat = open(f"/proc/{pid}/task/{task}/stat").read()
    except OSError:
        continue
    name = re.sub(r"[\d :\-]+$", "", stat[stat.find("(") + 1 : stat.rfind(")")])
    fields = stat[stat.rfind(")") + 2 :].split()
    out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / 100
io = dict(line.split(": ") for line in open(f"/proc/{pid}/io").read().splitlines())
out["read_bytes"], out["write_bytes"] = int(io["read_bytes"]), int(io["write_bytes"])
print(json.dumps(out))
EOF
}

# drive DIR NAME ARGS…: `baton load` against the running server; its JSON report, plus the
# server's CPU µs and storage bytes per message during the run, to $OUT/NAME.json.
drive() {
    local dir=$1 name=$2 before after
    shift 2
    before=$(usage)
    "$BATON" load --url "$URL" --key "$(cat "$dir/admin.key")" --json "$@" >"$OUT/$name.json" 2>>"$OUT/load.log"
    after=$(usage)
    jq --argjson a "$before" --argjson b "$after" '. as $r | . + {server: ($b | to_entries | map({key, value: ((.value - ($a[.key] // 0)) / ([$r.ok, 1] | max) * (if .key | endswith("bytes") then 1 else 1e6 end) | round)}) | map(select(.value > 0)) | from_entries)}' \
        "$OUT/$name.json" >"$OUT/$name.tmp" && mv "$OUT/$name.tmp" "$OUT/$name.json"
    log "$name: $(jq -c '{throughput, ok, errors, p50_ms, p99_ms, elapsed_s, server}' "$OUT/$name.json")"
}

status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVER/status"; }
metric() { curl -sf "$URL/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
memory_line() {
    log "$1: VmRSS $(($(status_kb VmRSS) / 1024)) MiB, VmHWM $(($(status_kb VmHWM) / 1024)) MiB, live actors $(metric baton_live_actors), passivations $(metric baton_passivations_total), handled $(metric 'baton_messages_handled_total{outcome="replied"}')"
}

# drive_sampled SECONDS DIR NAME ARGS…: `drive`, with memory_line logged every SECONDS meanwhile
# (by a background loop, SAMPLER, which the EXIT trap stops if the run is cut short).
drive_sampled() {
    (while sleep "$1"; do memory_line "sample"; done) &
    SAMPLER=$!
    shift
    drive "$@"
    kill "$SAMPLER"
    SAMPLER=
}

memory() {
    wait_for_quiet
    local dir=$OUT/memory-default
    rm -rf "$dir"
    log "memory, default config (cache_capacity_bytes 128 MiB, idle_passivate_secs 300)"
    start "$dir"
    memory_line "started"
    drive "$dir" memory-default --conversations 100000 --messages 100000 --connections 64
    memory_line "100,000 conversations driven"
    sleep 10
    memory_line "10 s later"
    stop
    rm -rf "$dir"

    wait_for_quiet
    dir=$OUT/memory-passivate
    rm -rf "$dir"
    log "memory, idle_passivate_secs 10 (BATON_ACTORS__IDLE_PASSIVATE_SECS=10), 300,000 conversations"
    start "$dir" BATON_ACTORS__IDLE_PASSIVATE_SECS=10
    memory_line "started"
    drive_sampled 15 "$dir" memory-passivate --conversations 300000 --messages 300000 --connections 64
    memory_line "300,000 conversations driven"
    sleep 20
    memory_line "20 s later"
    stop
    rm -rf "$dir"
}

million() {
    local full=$OUT/million fresh=$OUT/fresh
    if [[ ! -f $full/filled ]]; then
        wait_for_quiet
        rm -rf "$full"
        log "filling $full with 1,000,000 conversations (one message each)"
        start "$full"
        drive_sampled 30 "$full" million-fill --conversations 1000000 --messages 1000000 --connections 64
        memory_line "filled"
        stop
        log "shutdown after the fill: $STOP_MS ms"
        touch "$full/filled"
        start "$full"
        log "first start after the fill: $STARTUP_MS ms"
        stop
    fi
    log "data dir: $(du -sh "$full/db" | cut -f1) ($(du -sb "$full/db" | cut -f1) bytes)"

    wait_for_quiet
    rm -rf "$fresh"
    for i in $(seq "$REPEATS"); do
        start "$fresh"
        log "startup on a fresh dir #$i: $STARTUP_MS ms (#1 creates the dir and the admin key)"
        stop
    done
    for i in $(seq "$REPEATS"); do
        start "$full"
        log "startup on the 1,000,000-conversation dir, warm page cache #$i: $STARTUP_MS ms, VmRSS $(($(status_kb VmRSS) / 1024)) MiB"
        stop
    done
    for i in $(seq "$REPEATS"); do
        evict "$full"
        start "$full"
        log "startup on the 1,000,000-conversation dir, its files evicted from the page cache #$i: $STARTUP_MS ms"
        stop
    done

    # A start after a crash: sled then replays the log written since the last snapshot (the
    # close-time snapshot is what a clean stop adds), here 200,000 messages to stored conversations.
    wait_for_quiet
    local crashed=$OUT/million-crashed
    rm -rf "$crashed"
    cp -a "$full" "$crashed"
    sync
    start "$crashed"
    drive "$crashed" crash-session --conversations 1000000 --messages 200000 --connections 64
    stop KILL
    start "$crashed"
    log "first start after a crash (SIGKILL) that followed 200,000 messages: $STARTUP_MS ms"
    stop
    start "$crashed"
    log "the start after that: $STARTUP_MS ms"
    stop
    rm -rf "$crashed"

    # The same runs on each dir, alternating: idle SETTLE s, one message to each of 10,000
    # conversations (warm-up), then SECS s over those 10,000 (hot), then SECS s spread over
    # 1,000,000 conversations (each message to a conversation not live: loaded from disk on the
    # full dir, created on the fresh one). Every run starts from the same state: a new fresh dir,
    # or a copy of the filled dir as the fill left it (a run adds 300,000-500,000 turns, which
    # would otherwise make each later run's store bigger than the one before).
    local target dir kind work=$OUT/million-copy
    for i in $(seq "$REPEATS"); do
        for target in full fresh; do
            wait_for_quiet
            if [[ $target == fresh ]]; then
                dir=$fresh
                rm -rf "$dir"
            else
                dir=$work
                rm -rf "$dir"
                cp -a "$full" "$dir"
                sync
            fi
            start "$dir"
            sleep "$SETTLE"
            drive "$dir" "$target-warm-$i" --conversations 10000 --messages 10000 --connections 64
            drive "$dir" "$target-hot-$i" --conversations 10000 --duration "$SECS" --connections 64
            drive "$dir" "$target-spread-$i" --conversations 1000000 --duration "$SECS" --connections 64
            stop
        done
    done
    rm -rf "$fresh" "$work"
    for kind in hot spread; do
        log "$kind, median of $REPEATS: $(jq -sc '{msgs_per_s: (map(.throughput) | sort | .[length / 2 | floor]), p99_ms: (map(.p99_ms) | sort | .[length / 2 | floor])}' "$OUT"/full-$kind-*.json) on the 1M dir, $(jq -sc '{msgs_per_s: (map(.throughput) | sort | .[length / 2 | floor]), p99_ms: (map(.p99_ms) | sort | .[length / 2 | floor])}' "$OUT"/fresh-$kind-*.json) fresh"
    done
}

# The default-config memory run again, on the filled 1M dir (after `million`): one message to
# each of 100,000 conversations stored there (loaded from disk, then live).
million_memory() {
    local full=$OUT/million
    [[ -f $full/filled ]] || { log "run \`$0 million\` first"; exit 1; }
    wait_for_quiet
    log "memory on the 1,000,000-conversation dir, default config"
    start "$full"
    memory_line "started"
    sleep "$SETTLE"
    memory_line "after $SETTLE s idle"
    drive "$full" million-memory --conversations 100000 --messages 100000 --connections 64
    memory_line "100,000 conversations driven"
    stop
}

case ${1:-all} in
    memory) memory ;;
    million) million ;;
    million-memory) million_memory ;;
    all) memory; million; million_memory ;;
    *) echo "usage: $0 [all|memory|million|million-memory]" >&2; exit 2 ;;
esac
