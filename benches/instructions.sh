#!/usr/bin/env bash
# User-space instructions per handled message, counted by callgrind: the release `baton serve`
# (its default config and logging) under `valgrind --tool=callgrind`, driven by `baton load`.
# Unlike msgs/s on shared cores, the count is the same for the same binary and input, so a
# change to the handle path can be compared in one pair of runs. The kernel is not counted.
#
#   benches/instructions.sh                 # builds the release binary, prints the figures
#   BATON=/path/to/baton benches/instructions.sh   # an existing binary (e.g. an older build)
#
# Environment: OUT (target/instructions: callgrind's output and the server log), MESSAGES
# (10000, after 4000 to warm up), CONVERSATIONS (2000), CONNECTIONS (16). Needs valgrind
# (callgrind_control, callgrind_annotate), curl, jq and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/instructions}
MESSAGES=${MESSAGES:-10000}
CONVERSATIONS=${CONVERSATIONS:-2000}
CONNECTIONS=${CONNECTIONS:-16}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [[ -z ${BATON:-} ]]; then
    cargo build --release --bin baton 2>&1 | tail -1 >&2
    BATON=target/release/baton
fi
cp "$BATON" "$OUT/baton"
rm -rf "$OUT/data" "$OUT"/callgrind.out*
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT

valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
    "$OUT/baton" serve --addr "127.0.0.1:$PORT" --data-dir "$OUT/data" >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
until curl -sf -o /dev/null "$URL/healthz"; do
    kill -0 "$SERVER" 2>/dev/null || { echo "the server died; see $OUT/server.log" >&2; exit 1; }
    sleep 0.5
done
KEY=$(cat "$OUT/data/admin.key")
drive() {
    "$OUT/baton" load --url "$URL" --key "$KEY" --conversations "$CONVERSATIONS" \
        --connections "$CONNECTIONS" --messages "$1" --json 2>/dev/null
}
drive 4000 >/dev/null
callgrind_control -z "$SERVER" >/dev/null 2>&1
ok=$(drive "$MESSAGES" | jq .ok)
callgrind_control -d "$SERVER" >/dev/null 2>&1
kill "$SERVER"
wait "$SERVER" 2>/dev/null || true

# The dump holds the measured messages only. actix-http clears a 3-KB header index with
# `rep stosb` for each request it decodes, which callgrind counts once per byte: left out.
annotated=$(callgrind_annotate --inclusive=yes "$OUT"/callgrind.out.1 2>/dev/null)
total=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }' <<<"$annotated")
memset=$(awk '/__memset_[a-z0-9_]*_erms/ { gsub(",", "", $1); print $1; exit }' <<<"$annotated")
echo "messages: $ok acknowledged"
echo "user-space instructions per message: $(((total - ${memset:-0}) / ok)) (with actix's header-index memset: $((total / ok)))"
echo "by function: callgrind_annotate --inclusive=yes $OUT/callgrind.out.1"
