#!/usr/bin/env bash
# Runs the HTTP caching test suite behind cache-tests.fyi (npm package `http-cache-tests`)
# against /api/cache/proxy in standards mode, under the real Spin, over TLS Redis with a
# password, and prints the suite's scores beside the published results of other caches for
# the same test ids (docs/cache.md, "Conformance").
#
#   tests/cache-conformance/run.sh            # the npm package's tests and results
#   SUITE_DIR=/path/to/cache-tests/checkout tests/cache-conformance/run.sh
#                                             # a checkout of http-tests/cache-tests instead
#                                             # (its dependencies are installed from npm)
#   RESULTS_DIR=/path/to/results              # published results to compare with
#                                             # (default: the suite's own results/)
#
# Needs node 20 + npm, redis-server (with TLS), openssl, and the app built
# (`spin build` or cargo build --target wasm32-wasip2 --release). SPIN defaults to
# ../shared/bin/spin beside the checkout. Everything runs on 127.0.0.1; nothing is left behind
# but the work directory it prints.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/tests/cache-conformance"
SPIN=${SPIN:-$ROOT/../shared/bin/spin}
WORK=${WORK:-$(mktemp -d /tmp/cache-conformance.XXXXXX)}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ORIGIN_PORT=$(free_port); REDIS_PORT=$(free_port); APP_PORT=$(free_port)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "work directory: $WORK" >&2

# 1. The suite: from npm, or a checkout.
if [[ -n "${SUITE_DIR:-}" ]]; then
  cp -r "$SUITE_DIR" "$WORK/suite"
  (cd "$WORK/suite" && npm install --omit=dev --no-audit --no-fund >/dev/null)
  SUITE="$WORK/suite"
else
  cp "$HERE/package.json" "$WORK/"
  (cd "$WORK" && npm install --no-audit --no-fund >/dev/null)
  SUITE="$WORK/node_modules/http-cache-tests"
fi
if [[ -d "$SUITE/test-engine" ]]; then ENGINE="$SUITE/test-engine"; else ENGINE="$SUITE"; fi
export npm_config_protocol=http npm_config_id='' npm_package_config_id='' npm_config_pidfile="$WORK/server.pid"

# 2. Its origin server.
(cd "$SUITE" && exec setsid env npm_config_port="$ORIGIN_PORT" node "$ENGINE/server/server.mjs" >"$WORK/origin.log" 2>&1) &
PIDS+=($!)

# 3. Redis over TLS with a password (base64, so it needs percent-encoding in URLs).
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=conformance-ca \
  -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$WORK/redis.key" \
  -out "$WORK/redis.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$WORK/san.ext"
openssl x509 -req -in "$WORK/redis.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
  -CAcreateserial -days 1 -extfile "$WORK/san.ext" -out "$WORK/redis.crt" 2>/dev/null
PASSWORD=$(openssl rand -base64 24 | tr -d '\n')
ENCODED=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$PASSWORD")
setsid redis-server --port 0 --tls-port "$REDIS_PORT" --bind 127.0.0.1 \
  --tls-cert-file "$WORK/redis.crt" --tls-key-file "$WORK/redis.key" \
  --tls-ca-cert-file "$WORK/ca.crt" --tls-auth-clients no --requirepass "$PASSWORD" \
  --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)

cat >"$WORK/runtime-config.toml" <<TOML
[key_value_store.redis]
type = "redis"
url = "rediss://:$ENCODED@127.0.0.1:$REDIS_PORT"
[key_value_store.redis_standby]
type = "redis"
url = "rediss://:$ENCODED@127.0.0.1:$REDIS_PORT"
[key_value_store.breaker]
type = "spin"
TOML

# 4. The app, standards mode: every path, every query parameter, no stale or error windows
# of our own, no jitter, a day's cap on lifetimes.
export SSL_CERT_FILE="$WORK/ca.crt"
export SPIN_VARIABLE_REDIS_HOST=127.0.0.1 SPIN_VARIABLE_REDIS_PORT="$REDIS_PORT" \
  SPIN_VARIABLE_REDIS_TLS=true SPIN_VARIABLE_REDIS_ACCESS_KEY="$PASSWORD" \
  SPIN_VARIABLE_ORIGIN_URL="http://127.0.0.1:$ORIGIN_PORT" \
  SPIN_VARIABLE_CACHE_MODE=standard SPIN_VARIABLE_CACHE_PATH_PREFIXES=/ \
  SPIN_VARIABLE_CACHE_QUERY_IGNORE='' SPIN_VARIABLE_CACHE_VARY_HEADERS='' \
  SPIN_VARIABLE_CACHE_STALE_SECONDS=3600 SPIN_VARIABLE_CACHE_ERROR_TTL_SECONDS=0 \
  SPIN_VARIABLE_CACHE_PASS_TTL_SECONDS=0 SPIN_VARIABLE_CACHE_TTL_JITTER=0 \
  SPIN_VARIABLE_CACHE_TTL_SECONDS=86400 SPIN_VARIABLE_CACHE_KEY_BUCKETS=1 \
  SPIN_VARIABLE_CACHE_NEGATIVE_TTL_SECONDS=0
(cd "$ROOT" && exec setsid "$SPIN" up --from spin.toml --runtime-config-file "$WORK/runtime-config.toml" \
  --listen "127.0.0.1:$APP_PORT" >"$WORK/spin.log" 2>&1) &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$APP_PORT/health/cache" && break
  sleep 0.2
done

# 5. The suite, then the scores.
(cd "$SUITE" && npm_config_base="http://127.0.0.1:$APP_PORT/api/cache/proxy" \
  node --no-warnings "$ENGINE/cli.mjs") >"$WORK/results.json"
node "$HERE/scores.mjs" "$SUITE" "$WORK/results.json" "${RESULTS_DIR:-$SUITE/results}"
