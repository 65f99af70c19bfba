#!/usr/bin/env bash
# Pins deploy/cluster/shim-spin.yaml to one containerd-shim-spin release: points every platform
# entry at that release's tarball and writes the tarball's sha256, which runtime-class-manager's
# install Job verifies on every node. The shim's releases publish no checksum files, so this
# downloads each tarball once and computes the digest itself; commit the result, so that every
# cluster and every node that joins later installs exactly these bytes. Used for the first
# install (the file ships with a zero placeholder, which install-spinkube.sh refuses) and for
# every upgrade (docs/deploy-aks.md, "Upgrading the shim").
#
# Usage: SHIM_VERSION=v0.24.0 bash deploy/scripts/pin-shim.sh
#        SHIM_FILE=path/to/shim.yaml ...  pins another file (default deploy/cluster/shim-spin.yaml)
#        DRY_RUN=1 ...                    prints the downloads instead of making them; writes nothing
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

: "${SHIM_VERSION:?set SHIM_VERSION, e.g. v0.24.0}"
[[ $SHIM_VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "SHIM_VERSION must look like v0.24.0, not '$SHIM_VERSION'"
SHIM_FILE="${SHIM_FILE:-deploy/cluster/shim-spin.yaml}"
[ -f "$SHIM_FILE" ] || die "no $SHIM_FILE"
RELEASES="https://github.com/spinframework/containerd-shim-spin/releases/download"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out="$work/shim.yaml"
pinned=0
# Rewrites each `location:` line to the release's URL for the same file name, and the
# `sha256:` line that follows it to that file's digest.
while IFS= read -r line; do
  if [[ $line =~ ^([[:space:]]*)location:[[:space:]]*\"?([^\"]*)\"?[[:space:]]*$ ]]; then
    indent=${BASH_REMATCH[1]}
    url="$RELEASES/$SHIM_VERSION/${BASH_REMATCH[2]##*/}"
    log "download $url"
    if [ "$DRY_RUN" = 1 ]; then
      printf '? curl -fsSL %s\n' "$url" >&2
      digest=$(printf '0%.0s' $(seq 64))
    else
      curl -fsSL --retry 3 -o "$work/tarball" "$url" || die "could not download $url"
      digest=$(sha256sum "$work/tarball" | cut -d' ' -f1)
    fi
    printf '%slocation: "%s"\n' "$indent" "$url" >>"$out"
    continue
  fi
  if [[ $line =~ ^([[:space:]]*)sha256: ]]; then
    [ -n "${digest:-}" ] || die "$SHIM_FILE: a sha256 line with no location before it"
    printf '%ssha256: "%s"\n' "${BASH_REMATCH[1]}" "$digest" >>"$out"
    digest=""
    pinned=$((pinned + 1))
    continue
  fi
  printf '%s\n' "$line" >>"$out"
done <"$SHIM_FILE"
[ "$pinned" -gt 0 ] || die "$SHIM_FILE has no platform entry with a sha256 line"
if [ "$DRY_RUN" = 1 ]; then
  printf '+ write %s (%s platforms pinned to %s)\n' "$SHIM_FILE" "$pinned" "$SHIM_VERSION" >&2
else
  cp "$out" "$SHIM_FILE"
  log "$SHIM_FILE: $pinned platforms pinned to $SHIM_VERSION; review and commit it"
fi
