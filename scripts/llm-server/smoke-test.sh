#!/usr/bin/env bash
# End-to-end check of server.mjs with curl: starts it on a free port, calls every endpoint
# (answers, JSON modes, determinism, the error cases), prints latencies, stops it with SIGTERM.
#
#   scripts/llm-server/smoke-test.sh [MODEL.gguf]
#
# The model defaults to $LLM_SERVER_MODEL, else it is fetched with fetch-model.sh into
# ${LLM_MODEL_DIR:-$HOME/.cache/chimera-llm}. Needs `npm ci` done in this folder, curl and node.
# Ends with the line "N passed, N failed"; exits non-zero when a check failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
model=${1:-${LLM_SERVER_MODEL:-}}
if [[ -z "$model" ]]; then
  model=$("$here/fetch-model.sh" "${LLM_MODEL_DIR:-$HOME/.cache/chimera-llm}")
fi
if [[ ! -d "$here/node_modules/node-llama-cpp" ]]; then
  echo "smoke-test: run 'NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm ci --omit=optional' in $here first" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/llm-smoke.XXXXXX")
server_pid=
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
not_ok() { failed=$((failed + 1)); echo "FAIL - $1"; [[ $# -gt 1 ]] && echo "       $2"; return 0; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# --- start ------------------------------------------------------------------------------------
t_start=$(now)
node "$here/server.mjs" --model "$model" --host 127.0.0.1 --port 0 >"$work/stdout" 2>"$work/stderr" &
server_pid=$!
for _ in $(seq 1 1200); do
  [[ -s "$work/stdout" ]] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
line=$(head -n1 "$work/stdout" || true)
if [[ ! "$line" =~ ^listening\ on\ (http://127\.0\.0\.1:[0-9]+)$ ]]; then
  echo "smoke-test: the server did not start; stderr:" >&2
  cat "$work/stderr" >&2
  exit 1
fi
base=${BASH_REMATCH[1]}
t_ready=$(now)
echo "# server ready at $base after $(secs "$t_start" "$t_ready") s (process start + model load)"

# --- helpers ----------------------------------------------------------------------------------
# call NAME STATUS JS_ASSERTION CURL_ARGS... : the body is in `b` (parsed JSON), must make the
# assertion true; the last body is kept in $work/body, the time in $last_time.
last_time=0
call() {
  local name=$1 want=$2 assertion=$3
  shift 3
  local out status
  out=$(curl -sS -o "$work/body" -w '%{http_code} %{time_total}' "$@") || { not_ok "$name" "curl failed"; return 0; }
  status=${out%% *}
  last_time=${out##* }
  if [[ "$status" != "$want" ]]; then
    not_ok "$name" "status $status, want $want: $(head -c 300 "$work/body")"
    return 0
  fi
  if node -e "const b = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8')); if (!($assertion)) process.exit(1);" \
      "$work/body" 2>"$work/assert.err"; then
    ok "$name (${last_time}s)"
  else
    not_ok "$name" "assertion failed: $assertion; body: $(head -c 300 "$work/body") $(head -c 300 "$work/assert.err")"
  fi
}
chat() { local name=$1 want=$2 assertion=$3 body=$4; call "$name" "$want" "$assertion" "$base/v1/chat/completions" -H 'content-type: application/json' --data-binary "$body"; }
content() { node -e 'const b = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); process.stdout.write(b.choices[0].message.content)' "$work/body"; }
is_error='b.error && typeof b.error.message === "string" && typeof b.error.type === "string" && "code" in b.error'

# --- endpoints --------------------------------------------------------------------------------
call "GET /health" 200 'b.status === "ok" && b.model === "smollm2-135m-instruct"' "$base/health"
call "GET /v1/models" 200 'b.object === "list" && b.data.length === 1 && b.data[0].id === "smollm2-135m-instruct" && b.data[0].object === "model"' "$base/v1/models"

shape='b.object === "chat.completion" && /^chatcmpl-/.test(b.id) && Number.isInteger(b.created) && b.model === "smollm2-135m-instruct" && b.choices.length === 1 && b.choices[0].index === 0 && b.choices[0].message.role === "assistant" && typeof b.choices[0].message.content === "string" && ["stop", "length"].includes(b.choices[0].finish_reason) && b.usage.prompt_tokens > 0 && b.usage.completion_tokens > 0 && b.usage.total_tokens === b.usage.prompt_tokens + b.usage.completion_tokens'

text_req='{"model":"smollm2-135m-instruct","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"What is the capital of France? Answer in one sentence."}],"max_tokens":64}'
chat "chat, free text (first call)" 200 "$shape" "$text_req"
t_first=$last_time
chat "chat, free text" 200 "$shape && /Paris/.test(b.choices[0].message.content)" "$text_req"
t_text=$last_time
first=$(content)
chat "chat, free text again" 200 "$shape" "$text_req"
second=$(content)
if [[ "$first" == "$second" ]]; then ok "temperature 0 is deterministic"; else not_ok "temperature 0 is deterministic" "$first != $second"; fi

chat "chat, max_tokens 8 -> finish_reason length" 200 "$shape && b.choices[0].finish_reason === \"length\" && b.usage.completion_tokens === 8" \
  '{"messages":[{"role":"user","content":"Write a long story about a dragon."}],"max_tokens":8}'

schema='{"type":"object","properties":{"topic":{"type":"string"},"score":{"type":"number"}},"required":["topic","score"],"additionalProperties":false}'
schema_req='{"messages":[{"role":"system","content":"Reply with JSON only."},{"role":"user","content":"Rate the topic \"Rust ownership\" from 0 to 10."}],"max_tokens":128,"response_format":{"type":"json_schema","json_schema":{"name":"rating","strict":true,"schema":'"$schema"'}}}'
chat "chat, json_schema" 200 "$shape && b.choices[0].finish_reason === \"stop\" && (() => { const v = JSON.parse(b.choices[0].message.content); return typeof v.topic === \"string\" && typeof v.score === \"number\" && Object.keys(v).sort().join() === \"score,topic\"; })()" "$schema_req"
t_schema=$last_time
chat "chat, json_object" 200 "$shape && b.choices[0].finish_reason === \"stop\" && (() => { const v = JSON.parse(b.choices[0].message.content); return v !== null && typeof v === \"object\" && !Array.isArray(v); })()" \
  '{"messages":[{"role":"user","content":"Give a JSON object with the keys name and age for a fictional person."}],"max_tokens":128,"response_format":{"type":"json_object"}}'
chat "chat, seeded sampling" 200 "$shape" '{"messages":[{"role":"user","content":"Name a color."}],"max_tokens":16,"temperature":0.8,"seed":42}'
seeded=$(content)
chat "chat, seeded sampling again" 200 "$shape" '{"messages":[{"role":"user","content":"Name a color."}],"max_tokens":16,"temperature":0.8,"seed":42}'
if [[ "$seeded" == "$(content)" ]]; then ok "same seed, same answer"; else not_ok "same seed, same answer"; fi

# --- errors -----------------------------------------------------------------------------------
chat "400 malformed JSON" 400 "$is_error && b.error.code === \"invalid_json\"" '{"messages":'
chat "400 body not an object" 400 "$is_error" '[1,2,3]'
chat "400 missing messages" 400 "$is_error && b.error.param === \"messages\"" '{"model":"x"}'
chat "400 empty messages" 400 "$is_error" '{"messages":[]}'
chat "400 bad role" 400 "$is_error" '{"messages":[{"role":"tool","content":"x"}]}'
chat "400 content not a string" 400 "$is_error" '{"messages":[{"role":"user","content":42}]}'
chat "400 unknown response_format type" 400 "$is_error && b.error.param === \"response_format.type\"" '{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"yaml"}}'
chat "400 schema the grammar cannot enforce" 400 "$is_error && b.error.code === \"invalid_json_schema\"" \
  '{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"id":{"type":"string","pattern":"^[a-z]+$"}}}}}}'
chat "400 schema with an unknown type" 400 "$is_error && b.error.code === \"invalid_json_schema\"" \
  '{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"thing"}}}}'
chat "400 json_schema without schema" 400 "$is_error" '{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x"}}}'
chat "400 temperature out of range" 400 "$is_error && b.error.param === \"temperature\"" '{"messages":[{"role":"user","content":"hi"}],"temperature":3}'
chat "400 stream unsupported" 400 "$is_error" '{"messages":[{"role":"user","content":"hi"}],"stream":true}'
call "404 unknown path" 404 "$is_error" "$base/v1/nope"
call "405 GET on chat/completions" 405 "$is_error" "$base/v1/chat/completions"
call "405 POST on /health" 405 "$is_error" -X POST "$base/health"
head -c $((1024 * 1024 + 10)) /dev/zero | tr '\0' ' ' >"$work/big.json"
call "413 body over 1 MiB" 413 "$is_error" -H 'content-type: application/json' --data-binary "@$work/big.json" "$base/v1/chat/completions"
call "still healthy after the errors" 200 'b.status === "ok"' "$base/health"

if [[ "$(wc -l <"$work/stdout")" -eq 1 ]]; then ok "stdout holds only the listening line"; else not_ok "stdout holds only the listening line" "$(cat "$work/stdout")"; fi

# --- stop -------------------------------------------------------------------------------------
kill -TERM "$server_pid"
rc=0
wait "$server_pid" || rc=$?
server_pid=
if [[ $rc -eq 0 ]]; then ok "SIGTERM stops the server with status 0"; else not_ok "SIGTERM stops the server with status 0" "exit status $rc"; fi

echo "# latency: first call ${t_first}s, free text (max_tokens 64) ${t_text}s, json_schema ${t_schema}s"
echo "# server log: $(grep -c chatcmpl- "$work/stderr" || true) completions; last lines:"
tail -n 3 "$work/stderr" | sed 's/^/#   /'
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
