#!/usr/bin/env bash
# schemathesis (from PyPI) against the live server's /openapi.json: no server error, and every
# answer matches the document (status, content type, headers, schema).
#
# The deletes that would remove the fixture itself (the key in use, the chatbot, its contact)
# are left out; tests/api/fuzz.rs and tests/api/openapi.rs drive them.
#
# Usage: .ci/schemathesis.sh [BATON_BINARY]   (default: $CARGO_TARGET_DIR/debug/baton, built if missing)
# Env:   SCHEMATHESIS_MAX_EXAMPLES (default 25), SCHEMATHESIS_VERSION (pinned below).
set -euo pipefail
cd "$(dirname "$0")/.."

version="${SCHEMATHESIS_VERSION:-4.32.5}"
venv="target/ci-venv"
binary="${1:-${CARGO_TARGET_DIR:-target}/debug/baton}"
port="${SCHEMATHESIS_PORT:-18181}"
base="http://127.0.0.1:${port}"

if [[ ! -x "$venv/bin/schemathesis" ]] || ! "$venv/bin/schemathesis" --version | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==${version}"
fi
[[ -x "$binary" ]] || cargo build --locked --bin baton

data="$(mktemp -d)"
log="$data/server.log"

# A stand-in for the AI provider (OpenAI's chat completions shape), so ai-draft answers.
python3 - "$((port + 1))" >"$data/model.log" 2>&1 <<'PY' &
import http.server, json, sys
class Model(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "A draft."}}],
                           "usage": {"total_tokens": 3}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Model).serve_forever()
PY
model=$!

BATON_AI__OPENAI__BASE_URL="http://127.0.0.1:$((port + 1))" BATON_AI__OPENAI__API_KEY="sk-schemathesis" \
  "$binary" serve --data-dir "$data/db" --addr "127.0.0.1:${port}" >"$log" 2>&1 &
server=$!
trap 'kill "$server" "$model" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"' EXIT

ready=""
for _ in $(seq 1 300); do
  curl -sf "$base/healthz" >/dev/null && { ready=1; break; }
  sleep 0.1
done
[[ -n "$ready" ]] || { echo "schemathesis: baton did not start; its log follows" >&2; cat "$log" >&2; exit 1; }
key="$(cat "$data/db/admin.key")"

# A fixture, so path parameters name real objects and operations get past their 404s.
call() { # METHOD PATH BODY -> the answer's id (or the field named by $4)
  curl -sf -X "$1" "$base$2" -H "X-API-Key: $key" -H 'Content-Type: application/json' -d "$3" |
    python3 -c "import json,sys; print(json.load(sys.stdin)['${4:-id}'])"
}
export BATON_KEY="$key"
export BATON_BOT="$(call POST /v1/chatbots '{"name":"Schemathesis"}')"
export BATON_RULE="$(call POST "/v1/chatbots/$BATON_BOT/keywords" '{"keywords":["hours"],"match_type":"contains","response":"9 to 5"}')"
export BATON_FLOW="$(call POST "/v1/chatbots/$BATON_BOT/flows" '{"name":"Order","trigger_keywords":["order"],"steps":[{"step_name":"ask","step_order":1,"message":"Number?","message_type":"text","input_type":"text","store_as":"order"}]}')"
export BATON_CONTEXT="$(call POST "/v1/chatbots/$BATON_BOT/ai-contexts" '{"name":"Shipping","trigger_keywords":["ship"],"content":"Worldwide."}')"
export BATON_TEAM="$(call POST /v1/teams '{"name":"Billing"}')"
export BATON_AGENT="$(call POST /v1/agents "{\"name\":\"Ana\",\"team_ids\":[\"$BATON_TEAM\"]}")"
handle='{"channelId":"wa-main","channelName":"WhatsApp","providerId":"+4917000","message":{"id":"wamid.1","type":"text","text":"order"}}'
export BATON_CONVERSATION="$(call POST "/v1/chatbots/$BATON_BOT/conversations/handle" "$handle" conversation_id)"
export BATON_SESSION="$(curl -sf "$base/v1/sessions" -H "X-API-Key: $key" | python3 -c "import json,sys; print(json.load(sys.stdin)['items'][0]['id'])")"
export BATON_TRANSFER="$(call POST /v1/transfers "{\"conversation_id\":\"$BATON_CONVERSATION\",\"team_id\":\"$BATON_TEAM\"}")"

"$venv/bin/schemathesis" --config-file .ci/schemathesis.toml run "$base/openapi.json" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-25}" \
  --seed 1 \
  --workers 1 \
  --exclude-path-regex '^/(v1/)?ws' \
  --exclude-operation-id delete_api_key \
  --exclude-operation-id delete_chatbot \
  --exclude-operation-id delete_contact \
  || { echo "schemathesis: failures above; the server log follows" >&2; tail -50 "$log" >&2; exit 1; }
