#!/usr/bin/env bash
# Installs SpinKube on the current kubectl context: cert-manager; runtime-class-manager, which
# installs containerd-shim-spin v0.24.0 (Spin 3.6.3) on every node labelled
# spinkube.dev/spin=true (deploy/cluster/shim-spin.yaml), after the RuntimeClass
# wasmtime-spin-v2 that admits Spin pods only on nodes where that install has finished
# (deploy/cluster/runtimeclass.yaml); spin-operator v0.6.1 (CRDs and Helm chart); and the app's
# namespace with the Secret holding the executor's CA bundle (build-ca-bundle.sh).
# The Shim must carry its tarballs' sha256 first: run deploy/scripts/pin-shim.sh once.
#
# Usage: bash deploy/scripts/install-spinkube.sh
#        LABEL_ALL_NODES=1 ...  also labels every node for the shim (laptop clusters; on AKS
#                               the node pool carries the label, create-azure-resources.sh)
#        DRY_RUN=1 ...          prints the kubectl and helm calls instead of making them.
# Re-runnable: it only applies manifests and runs `helm upgrade --install`.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.16.2}"
SPIN_OPERATOR_VERSION="${SPIN_OPERATOR_VERSION:-v0.6.1}"
RCM_VERSION="${RCM_VERSION:-v0.2.0}"
NAMESPACE=spin-redis-patterns
RAW="https://raw.githubusercontent.com/spinframework/spin-operator/${SPIN_OPERATOR_VERSION}"

# A Shim without real digests would install whatever the URLs serve, or, with the zero
# placeholder, fail every install Job: stop before changing anything. A dry run only warns.
if grep -Eq 'sha256: "?0{64}"?' deploy/cluster/shim-spin.yaml ||
  ! grep -Eq 'sha256: "?[0-9a-f]{64}"?' deploy/cluster/shim-spin.yaml; then
  msg="deploy/cluster/shim-spin.yaml has no sha256 for its tarballs: run SHIM_VERSION=v0.24.0 bash deploy/scripts/pin-shim.sh and commit the result"
  if [ "$DRY_RUN" = 1 ]; then
    printf '! %s\n' "$msg" >&2
  else
    die "$msg"
  fi
fi

log "cert-manager $CERT_MANAGER_VERSION"
run kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
run kubectl wait --namespace cert-manager --for=condition=Available deployment --all --timeout=300s

# The kwasm operator this replaces installed the shim only on nodes annotated at install time;
# runtime-class-manager watches node labels, so new nodes of the pool get the shim too. Its
# images are pinned to the chart's release rather than the chart's default `latest`.
log "runtime-class-manager $RCM_VERSION and the Spin shim"
run helm upgrade --install runtime-class-manager oci://ghcr.io/spinframework/charts/runtime-class-manager \
  --version "${RCM_VERSION#v}" --namespace runtime-class-manager --create-namespace --wait \
  --set "image.tag=${RCM_VERSION}" \
  --set "rcm.shimDownloaderImage.tag=${RCM_VERSION}" \
  --set "rcm.nodeInstallerImage.tag=${RCM_VERSION}"
if [ "${LABEL_ALL_NODES:-0}" = 1 ]; then
  run kubectl label node --all spinkube.dev/spin=true --overwrite
fi
# The RuntimeClass first, on its own: the manager creates one from the Shim (without the
# installed-label requirement) if none exists when it first sees the Shim.
run kubectl apply -f deploy/cluster/runtimeclass.yaml
run kubectl apply -k deploy/cluster

log "spin-operator $SPIN_OPERATOR_VERSION"
run kubectl apply -f "${RAW}/config/crd/bases/core.spinkube.dev_spinapps.yaml"
run kubectl apply -f "${RAW}/config/crd/bases/core.spinkube.dev_spinappexecutors.yaml"
run helm upgrade --install spin-operator oci://ghcr.io/spinframework/charts/spin-operator \
  --namespace spin-operator --create-namespace --version "${SPIN_OPERATOR_VERSION#v}" --wait

# The executor itself (deploy/platform/executor.yaml) comes with each overlay; the CA bundle
# it mounts is made here, from the roots build-ca-bundle.sh lists.
log "namespace $NAMESPACE and the executor's CA bundle"
run kubectl apply -f deploy/platform/namespace.yaml
bundle=$(mktemp)
trap 'rm -f "$bundle"' EXIT
bash deploy/scripts/build-ca-bundle.sh >"$bundle"
if [ "$DRY_RUN" = 1 ]; then
  run kubectl apply --namespace "$NAMESPACE" -f "<Secret spin-redis-patterns-ca from $bundle>"
else
  kubectl create secret generic spin-redis-patterns-ca --namespace "$NAMESPACE" \
    --from-file=ca-certificates.crt="$bundle" --dry-run=client --output yaml |
    kubectl apply -f -
fi
log "done: kubectl get shim spin-v2 shows how many nodes have the shim"
