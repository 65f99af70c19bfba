# shellcheck shell=bash
# Helpers the deploy scripts source. Every call that changes something goes through `run`,
# every read-only look-up through `exists` or `get`, so that DRY_RUN=1 can print them all
# instead of making them (and without Azure or a cluster at hand, shows what a run would do).

DRY_RUN="${DRY_RUN:-0}"
case "$DRY_RUN" in
  0 | 1) ;;
  *) echo "DRY_RUN must be 0 or 1, not '$DRY_RUN'" >&2; exit 2 ;;
esac

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command that changes something; in a dry run prints it instead.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+ %s\n' "$*" >&2
    return 0
  fi
  "$@"
}

# Succeeds if the `az ... show` command given finds its resource, fails if az reports it
# missing (exit code 3: az's code for a 404 from Azure Resource Manager or Key Vault; not every
# command keeps to it, `az acr repository show` exits 1), and stops the script on any other
# failure. A failed look-up (expired login, throttling) must never be taken for "missing" and
# lead to a create, because `az redisenterprise create` on an existing cache overwrites it. A
# dry run prints the look-up and takes every resource as missing, so it shows every create a
# first run makes.
exists() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '? %s\n' "$*" >&2
    return 1
  fi
  local rc=0 err
  err=$("$@" --output none 2>&1 >/dev/null) || rc=$?
  case $rc in
    0) return 0 ;;
    3) return 1 ;;
    *) die "look-up failed (exit $rc): $* ${err}" ;;
  esac
}

# Prints the output of a read-only command; in a dry run prints the command on stderr and the
# placeholder given as the first argument on stdout.
get() {
  local placeholder=$1
  shift
  if [ "$DRY_RUN" = 1 ]; then
    printf '? %s\n' "$*" >&2
    printf '%s\n' "$placeholder"
    return 0
  fi
  "$@"
}

# A private directory for secret values on their way to a command that reads them from a
# file, so that no secret ever appears on a command line (visible in `ps` and shell history).
# Sets SECRETS_DIR; removed when the script exits. Call it in the script's own shell, not in
# $(...), or the directory is removed as soon as the subshell ends.
init_secrets_dir() {
  SECRETS_DIR=$(umask 077 && mktemp -d)
  # shellcheck disable=SC2064 # expand now: the directory is known and fixed
  trap "rm -rf '$SECRETS_DIR'" EXIT
}

# Succeeds if IPv4 address $2 is inside IPv4 CIDR $1 (a.b.c.d/n).
cidr_contains() {
  local net=${1%/*} bits=${1#*/} ip=$2 a b c d n m
  IFS=. read -r a b c d <<<"$net"
  n=$(((a << 24) | (b << 16) | (c << 8) | d))
  IFS=. read -r a b c d <<<"$ip"
  m=$(((a << 24) | (b << 16) | (c << 8) | d))
  [ "$bits" -eq 0 ] && return 0
  (((n >> (32 - bits)) == (m >> (32 - bits))))
}

# Succeeds if $1 is an IPv4 CIDR such as 10.244.0.0/16.
is_ipv4_cidr() {
  [[ $1 =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})/([0-9]{1,2})$ ]] || return 1
  local i
  for i in 1 2 3 4; do [ "${BASH_REMATCH[i]}" -le 255 ] || return 1; done
  [ "${BASH_REMATCH[5]}" -le 32 ]
}
