#!/usr/bin/env bash
# Builds the app, pushes it to Azure Container Registry as an OCI artifact, and applies an
# overlay of deploy/overlays with the images by digest. Logs in to the registry without Docker:
# `az acr login --expose-token` gives a token, which reaches `spin registry login` on stdin.
#
# Usage: ACR=contosoacr.azurecr.io bash deploy/scripts/deploy-app.sh
#        OVERLAY=aks-secrets|aks-keyvault|autoscaling|autoscaling-keda (default aks-keyvault)
#        VERSION=0.1.0 (the tag pushed; the manifests use the digest it gets)
#        POD_CIDR=10.244.0.0/16 (required: the cluster's pod CIDR, as create-azure-resources.sh
#          prints it; it becomes ratelimit_trusted_proxies once the ingress controller's pods
#          are checked to be inside it)
#        DRY_RUN=1 prints the az, spin and kubectl calls instead of making them.
# Needs kubectl 1.31+ (`kubectl wait --for=create`) and curl. Re-runnable: it applies the same
# objects. Order: namespace, executor and everything else first, the SpinApp last (spin-
# operator's webhook refuses a SpinApp whose executor does not exist yet), then a smoke test
# of /health/cache on the new pods.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

: "${ACR:?set ACR, e.g. contosoacr.azurecr.io}"
: "${POD_CIDR:?set POD_CIDR, the pod CIDR of the cluster (create-azure-resources.sh prints it)}"
is_ipv4_cidr "$POD_CIDR" || die "POD_CIDR must be an IPv4 CIDR such as 10.244.0.0/16, not '$POD_CIDR'"
OVERLAY="${OVERLAY:-aks-keyvault}"
VERSION="${VERSION:-0.1.0}"
NAMESPACE=spin-redis-patterns
ACR_NAME="${ACR%%.*}"
[ -f "deploy/overlays/$OVERLAY/kustomization.yaml" ] || die "no overlay deploy/overlays/$OVERLAY"
# The placeholders the manifests carry where the digests go.
ZERO_DIGEST="sha256:0000000000000000000000000000000000000000000000000000000000000000"
APP_PLACEHOLDER="myregistry.azurecr.io/spin-redis-patterns@$ZERO_DIGEST"
PAUSE_PLACEHOLDER="myregistry.azurecr.io/pause@$ZERO_DIGEST"
PAUSE_SOURCE="registry.k8s.io/pause:3.10"
# The write-behind drain's CronJob (deploy/overlays/write-behind-drain).
CURL_PLACEHOLDER="myregistry.azurecr.io/curl@$ZERO_DIGEST"
CURL_SOURCE="quay.io/curl/curl:8.11.1"
# Where ratelimit_trusted_proxies goes (deploy/base/spinapp.yaml).
CIDR_PLACEHOLDER="<pod CIDR>"

# The rate limiter will believe X-Forwarded-For from POD_CIDR: the ingress controller's pods
# must be inside it, or every caller would share the controller's address bucket.
log "ingress controller pods inside $POD_CIDR"
controller_ips=$(get "${POD_CIDR%/*}" kubectl get pods --namespace app-routing-system \
  --selector app.kubernetes.io/component=ingress-controller \
  --output 'jsonpath={.items[*].status.podIP}')
[ -n "$controller_ips" ] || die "no ingress controller pods in app-routing-system (az aks approuting enable)"
for ip in $controller_ips; do
  cidr_contains "$POD_CIDR" "$ip" ||
    die "the ingress controller pod $ip is outside POD_CIDR $POD_CIDR: read the cluster's with az aks show --query networkProfile.podCidr"
done

log "build and push $ACR/spin-redis-patterns:$VERSION"
run spin build
# The token is an ACR refresh token for the fixed user name below; it never appears on a
# command line.
token=$(get "<token>" az acr login --name "$ACR_NAME" --expose-token --output tsv --query accessToken)
login=(spin registry login --username 00000000-0000-0000-0000-000000000000 --password-stdin "$ACR")
if [ "$DRY_RUN" = 1 ]; then
  run "${login[@]}"
else
  printf '%s' "$token" | "${login[@]}"
fi
pushed=$(get "Pushed with digest $ZERO_DIGEST" spin registry push "$ACR/spin-redis-patterns:$VERSION")
digest=$(grep -o 'sha256:[0-9a-f]\{64\}' <<<"$pushed" | head -n 1) ||
  die "spin registry push reported no digest: $pushed"
APP_IMAGE="$ACR/spin-redis-patterns@$digest"

# The Key Vault sync pod's pause image, imported into the registry the cluster pulls from.
# No look-up first: `az acr repository show` reports a missing image as a generic failure
# (exit code 1), not as "not found". Importing the same tag again replaces it with the same
# image, so --force makes a re-run harmless.
log "pause image"
run az acr import --name "$ACR_NAME" --source "$PAUSE_SOURCE" --image pause:3.10 --force
pause_digest=$(get "$ZERO_DIGEST" az acr repository show --name "$ACR_NAME" --image pause:3.10 \
  --query digest --output tsv)
PAUSE_IMAGE="$ACR/pause@$pause_digest"

# The same for the drain CronJob's curl image.
log "curl image"
run az acr import --name "$ACR_NAME" --source "$CURL_SOURCE" --image curl:8.11.1 --force
curl_digest=$(get "$ZERO_DIGEST" az acr repository show --name "$ACR_NAME" --image curl:8.11.1 \
  --query digest --output tsv)
CURL_IMAGE="$ACR/curl@$curl_digest"

# Render the overlay with the digests, then split it: the SpinApp goes last, after the Secrets
# it reads exist (the operator reads store-url before it creates any pod).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ "$DRY_RUN" = 1 ]; then
  printf '? kubectl kustomize deploy/overlays/%s\n' "$OVERLAY" >&2
  : >"$work/rendered.yaml"
else
  kubectl kustomize "deploy/overlays/$OVERLAY" |
    sed -e "s|$APP_PLACEHOLDER|$APP_IMAGE|g" -e "s|$PAUSE_PLACEHOLDER|$PAUSE_IMAGE|g" \
      -e "s|$CURL_PLACEHOLDER|$CURL_IMAGE|g" \
      -e "s|$CIDR_PLACEHOLDER|$POD_CIDR|g" >"$work/rendered.yaml"
  if grep -q "$ZERO_DIGEST" "$work/rendered.yaml"; then
    die "an image in deploy/overlays/$OVERLAY still has the placeholder digest"
  fi
  if grep -qF "$CIDR_PLACEHOLDER" "$work/rendered.yaml"; then
    die "deploy/overlays/$OVERLAY still has the pod CIDR placeholder"
  fi
fi
awk -v apps="$work/spinapps.yaml" -v rest="$work/rest.yaml" '
  function flush() { if (doc != "") { print doc "---" > (is_app ? apps : rest) } doc = ""; is_app = 0 }
  /^---$/ { flush(); next }
  /^kind: SpinApp$/ { is_app = 1 }
  { doc = doc $0 "\n" }
  END { flush() }
' "$work/rendered.yaml"
touch "$work/spinapps.yaml" "$work/rest.yaml"

log "apply deploy/overlays/$OVERLAY"
run kubectl apply -f "$work/rest.yaml"
# The Key Vault overlays (aks-keyvault and those built on it) sync the Secrets from the vault.
if [ "$OVERLAY" = aks-keyvault ] || grep -qx -- '  - ../aks-keyvault' "deploy/overlays/$OVERLAY/kustomization.yaml"; then
  # The CSI driver creates the Secrets once the sync pod mounts the class.
  run kubectl rollout status --namespace "$NAMESPACE" deployment/spin-redis-patterns-secret-sync --timeout=300s
  run kubectl wait --namespace "$NAMESPACE" --for=create secret/spin-redis-patterns-redis --timeout=120s
  run kubectl wait --namespace "$NAMESPACE" --for=jsonpath='{.data.store-url}' \
    secret/spin-redis-patterns-redis --timeout=300s
else
  # Kubernetes Secrets are made by hand (docs/deploy-aks.md, section 5): stop before the
  # SpinApp if one is missing, rather than leave it failing to reconcile.
  for secret in spin-redis-patterns-redis spin-redis-patterns-app; do
    if [ "$DRY_RUN" = 1 ]; then
      printf '? kubectl get secret --namespace %s %s\n' "$NAMESPACE" "$secret" >&2
    elif ! kubectl get secret --namespace "$NAMESPACE" "$secret" >/dev/null; then
      die "create the Secret $secret first (docs/deploy-aks.md, section 5)"
    fi
  done
fi
run kubectl apply -f "$work/spinapps.yaml"
# The operator creates the Deployment once it has rendered the runtime config.
run kubectl wait --namespace "$NAMESPACE" --for=create deployment/spin-redis-patterns --timeout=120s
run kubectl rollout status --namespace "$NAMESPACE" deployment/spin-redis-patterns --timeout=300s

# Readiness is Spin's own health path, which a wrong key or host does not fail (docs/health.md):
# check that the new pods can use Redis through /health/cache, which the Ingress does not
# publish, over a port-forward (it reaches the pod without passing the NetworkPolicy).
log "smoke test: /health/cache"
if [ "$DRY_RUN" = 1 ]; then
  printf '? kubectl port-forward --namespace %s deployment/spin-redis-patterns :80 + curl /health/cache\n' "$NAMESPACE" >&2
else
  kubectl port-forward --namespace "$NAMESPACE" deployment/spin-redis-patterns :80 \
    >"$work/port-forward.log" 2>&1 &
  forward=$!
  trap 'kill "$forward" 2>/dev/null || true; rm -rf "$work"' EXIT
  port=""
  for _ in $(seq 1 30); do
    port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/port-forward.log" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$forward" 2>/dev/null || break
    sleep 1
  done
  [ -n "$port" ] || die "kubectl port-forward did not start: $(cat "$work/port-forward.log")"
  answer=""
  for _ in 1 2 3 4 5; do
    answer=$(curl --silent --show-error --max-time 10 --write-out ' HTTP %{http_code}' \
      "http://127.0.0.1:$port/health/cache" 2>&1) || true
    [[ $answer == *' HTTP 200' ]] && break
    sleep 3
  done
  [[ $answer == *' HTTP 200' ]] ||
    die "the new pods cannot use Redis: /health/cache answered $answer (docs/deploy-aks.md, section 6 names each reason)"
  log "/health/cache: $answer"
fi
