#!/usr/bin/env bash
# Issue 7's curves, from the in-process HTTP load bench (benches/load.rs: baton, durable, next
# to a bare actix-web handler in the same run): throughput and latency against connections and
# against conversations, then p50/p90/p99/max in open loop at half the closed-loop maximum.
# Each point is run REPEATS times; the tables give the median of each column.
#
#   benches/curves.sh                  # all four parts, about 20 minutes on 2 cores
#   benches/curves.sh connections      # one part: connections | conversations | open-loop | rates
#                                      # (rates: open loop at 500, 1,000, 1,500, 2,000 msgs/s)
#
# Environment: LOAD_SECS (6, seconds per target and run), REPEATS (3), OUT (target/curves:
# one JSON summary line per run in $OUT/*.jsonl, the tables in $OUT/tables.md).
# Needs cargo and jq. Waits while a soak bench or a build runs (they would share the cores).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${LOAD_SECS:-6}
REPEATS=${REPEATS:-3}
OUT=${OUT:-target/curves}
mkdir -p "$OUT"

wait_for_quiet() {
    while pgrep -f soak >/dev/null || pgrep -x rustc >/dev/null; do
        echo "a soak run or a build is on; waiting" >&2
        sleep 20
    done
}

# Build once and run a copy, so that edits to the tree during the runs change nothing.
build() {
    local exe
    wait_for_quiet
    exe=$(cargo bench --bench load --no-run --message-format=json 2>/dev/null |
        jq -r 'select(.executable != null and .target.name == "load" and .target.kind == ["bench"]) | .executable')
    [[ -x $exe ]] || { echo "no load bench executable (build failed?)" >&2; exit 1; }
    cp "$exe" "$OUT/load-bench"
}

# point FILE VAR=VALUE…: REPEATS runs of the bench, each summary appended to $OUT/FILE.jsonl
# with the 1-minute load average seen just before it.
point() {
    local file=$1 load
    shift
    for _ in $(seq "$REPEATS"); do
        wait_for_quiet
        load=$(cut -d' ' -f1 /proc/loadavg)
        env LOAD_SECS="$SECS" "$@" "$OUT/load-bench" 2>>"$OUT/stderr.log" | tail -1 |
            jq -c --argjson load "$load" '. + {loadavg_before: $load}' | tee -a "$OUT/$file.jsonl" |
            jq -r '"  \(.connections) conn, \(.conversations) conv, rate \(.rate): baton \(.baton.throughput) msgs/s, bare \(.bare.throughput), ratio \(.ratio), baton p99 \(.baton.p99_ms) ms"' >&2
    done
}

# The median of each column, one row per value of KEY (connections or conversations).
JQ_MEDIAN='def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
def m(f): [.[] | f] | median;
def r(n): . * n | round / n;'

table() {
    local file=$1 key=$2
    echo "| $key | baton msgs/s | bare msgs/s | ratio | baton p50 / p99 ms | bare p50 / p99 ms | server CPU µs/msg | errors (all runs) | load avg before |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    jq -rs "$JQ_MEDIAN"'
        group_by(.'"$key"')[] |
        "| \(.[0].'"$key"') | \(m(.baton.throughput) | round) | \(m(.bare.throughput) | round) | \(m(.ratio) | r(1000)) | \(m(.baton.p50_ms) | r(10)) / \(m(.baton.p99_ms) | r(10)) | \(m(.bare.p50_ms) | r(10)) / \(m(.bare.p99_ms) | r(10)) | \(m(.baton.server_cpu_us_per_msg) | round) | \([.[].baton.errors | to_entries[].value] | add // 0) | \(m(.loadavg_before) | r(100)) |"' \
        "$OUT/$file.jsonl"
}

connections() {
    rm -f "$OUT/connections.jsonl"
    for c in 1 4 16 64 256; do
        point connections LOAD_CONNECTIONS=$c LOAD_CONVERSATIONS=10000
    done
}

conversations() {
    rm -f "$OUT/conversations.jsonl"
    for n in 100 1000 10000 100000 1000000; do
        point conversations LOAD_CONNECTIONS=64 LOAD_CONVERSATIONS=$n
    done
}

# Closed loop at 64 connections over 10,000 conversations, then REPEATS open-loop runs at
# half its median throughput.
open_loop() {
    rm -f "$OUT/closed.jsonl" "$OUT/open.jsonl"
    point closed LOAD_CONNECTIONS=64 LOAD_CONVERSATIONS=10000
    local rate
    rate=$(jq -s "$JQ_MEDIAN"' m(.baton.throughput) / 2 | round' "$OUT/closed.jsonl")
    echo "open loop at $rate msgs/s" >&2
    point open LOAD_CONNECTIONS=64 LOAD_CONVERSATIONS=10000 LOAD_RATE="$rate"
}

# Open loop at fixed rates, 64 connections over 10,000 conversations: latency against load.
rates() {
    rm -f "$OUT/rates.jsonl"
    for rate in 500 1000 1500 2000; do
        point rates LOAD_CONNECTIONS=64 LOAD_CONVERSATIONS=10000 LOAD_RATE=$rate
    done
}

rates_table() {
    echo "| rate msgs/s | baton p50 ms | p90 ms | p99 ms (each run) | max ms | bare p99 ms | errors (all runs) |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    jq -rs "$JQ_MEDIAN"'
        group_by(.rate)[] |
        "| \(.[0].rate) | \(m(.baton.p50_ms) | r(10)) | \(m(.baton.p90_ms) | r(10)) | \(m(.baton.p99_ms) | r(10)) (\([.[].baton.p99_ms | r(10)] | map(tostring) | join(", "))) | \(m(.baton.max_ms) | r(10)) | \(m(.bare.p99_ms) | r(10)) | \([.[].baton.errors | to_entries[].value] | add // 0) |"' \
        "$OUT/rates.jsonl"
}

open_table() {
    echo "| run | rate msgs/s | baton msgs/s | p50 ms | p90 ms | p99 ms | max ms | errors | bare p99 ms (same rate) |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    jq -r '"| \(input_line_number) | \(.rate) | \(.baton.throughput | round) | \(.baton.p50_ms) | \(.baton.p90_ms) | \(.baton.p99_ms) | \(.baton.max_ms) | \(.baton.errors | to_entries | map(.value) | add // 0) | \(.bare.p99_ms) |"' "$OUT/open.jsonl"
    jq -rs "$JQ_MEDIAN"'"| median | \(m(.rate)) | \(m(.baton.throughput) | round) | \(m(.baton.p50_ms)) | \(m(.baton.p90_ms)) | \(m(.baton.p99_ms)) | \(m(.baton.max_ms)) | \([.[].baton.errors | to_entries[].value] | add // 0) | \(m(.bare.p99_ms)) |"' "$OUT/open.jsonl"
}

tables() {
    {
        echo "Runs of $SECS s per target, median of $REPEATS. $(nproc) cores."
        if [[ -s $OUT/connections.jsonl ]]; then echo; echo "Against connections (10,000 conversations):"; echo; table connections connections; fi
        if [[ -s $OUT/conversations.jsonl ]]; then echo; echo "Against conversations (64 connections):"; echo; table conversations conversations; fi
        if [[ -s $OUT/open.jsonl ]]; then
            echo
            echo "Closed loop just before (64 connections, 10,000 conversations):"
            echo
            table closed connections
            echo
            echo "Open loop at half of it:"
            echo
            open_table
        fi
        if [[ -s $OUT/rates.jsonl ]]; then echo; echo "Open loop at fixed rates (64 connections, 10,000 conversations):"; echo; rates_table; fi
    } | tee "$OUT/tables.md"
}

build
case ${1:-all} in
    connections) connections ;;
    conversations) conversations ;;
    open-loop) open_loop ;;
    rates) rates ;;
    tables) ;;
    all) connections; conversations; open_loop; rates ;;
    *) echo "usage: $0 [all|connections|conversations|open-loop|rates|tables]" >&2; exit 2 ;;
esac
tables
