#!/usr/bin/env bash
# Installs SpinKube on the current kubectl context, following spin-operator v0.6.1's chart
# README: cert-manager, the kwasm operator that puts containerd-shim-spin on the nodes, the
# spin-operator CRDs, Helm chart and runtime class, then this repo's executor (with a
# one-root CA bundle for Azure Redis) instead of the sample one.
set -euo pipefail
cd "$(dirname "$0")/../.."

CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.16.2}"
SPIN_OPERATOR_VERSION="${SPIN_OPERATOR_VERSION:-v0.6.1}"
SHIM_VERSION="${SHIM_VERSION:-v0.24.0}"   # embeds Spin 3.6.3
RAW="https://raw.githubusercontent.com/spinframework/spin-operator/${SPIN_OPERATOR_VERSION}"

kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
kubectl wait --namespace cert-manager --for=condition=Available deployment --all --timeout=300s

# Installs the shim on every annotated node and registers it with containerd.
helm repo add kwasm http://kwasm.sh/kwasm-operator/ --force-update
helm upgrade --install kwasm-operator kwasm/kwasm-operator \
  --namespace kwasm --create-namespace --wait \
  --set "kwasmOperator.installerImage=ghcr.io/spinframework/containerd-shim-spin/node-installer:${SHIM_VERSION}"
kubectl annotate node --all kwasm.sh/kwasm-node=true --overwrite

kubectl apply -f "${RAW}/config/crd/bases/core.spinkube.dev_spinapps.yaml"
kubectl apply -f "${RAW}/config/crd/bases/core.spinkube.dev_spinappexecutors.yaml"
helm upgrade --install spin-operator oci://ghcr.io/spinframework/charts/spin-operator \
  --namespace spin-operator --create-namespace --version "${SPIN_OPERATOR_VERSION#v}" --wait
kubectl apply -f "${RAW}/config/samples/spin-runtime-class.yaml"

# The root Azure Redis chains to, as the executor's whole CA bundle (see deploy/executor.yaml).
ca_file=$(mktemp)
trap 'rm -f "$ca_file"' EXIT
curl -fsSL https://cacerts.digicert.com/DigiCertGlobalRootG2.crt.pem -o "$ca_file"
kubectl create secret generic redis-root-ca --from-file=ca-certificates.crt="$ca_file" \
  --dry-run=client --output yaml | kubectl apply -f -
kubectl apply -f deploy/executor.yaml
