#!/usr/bin/env bash
# Prints the URL of the pooled fast path's key-value store (README "Pooled fast path"),
# rediss://:<access key>@<host>:<port>, with the key percent-encoded: Azure access keys are
# base64, and a raw + / or = in the URL gives Redis a wrong password or breaks the URL.
# The key is read from the environment, not the command line, so it stays out of `ps`.
#
# Usage: REDIS_HOST=contoso.redis.cache.windows.net REDIS_PORT=6380 REDIS_KEY=... \
#          bash deploy/scripts/redis-store-url.sh
set -euo pipefail

: "${REDIS_HOST:?set REDIS_HOST, e.g. contoso.redis.cache.windows.net}"
: "${REDIS_PORT:?set REDIS_PORT: 6380 (Azure Cache for Redis) or 10000 (Azure Managed Redis)}"
: "${REDIS_KEY:?set REDIS_KEY, the Redis access key}"

# RFC 3986: every byte but the unreserved characters becomes %XX. LC_ALL=C makes bash walk
# the string byte by byte.
percent_encode() {
  local LC_ALL=C
  local s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [A-Za-z0-9._~-]) out+=$c ;;
      *) printf -v c '%%%02X' "'$c"; out+=$c ;;
    esac
  done
  printf '%s' "$out"
}

printf 'rediss://:%s@%s:%s\n' "$(percent_encode "$REDIS_KEY")" "$REDIS_HOST" "$REDIS_PORT"
