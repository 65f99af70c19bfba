#!/usr/bin/env bash
# Builds the app, pushes it to Azure Container Registry as an OCI artifact, and applies the
# Key Vault variant of the manifests (kubectl 1.31+ for `kubectl wait --for=create`).
#
# Usage: ACR=contosoacr.azurecr.io VERSION=0.1.0 bash deploy/scripts/deploy-app.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${ACR:?set ACR, e.g. contosoacr.azurecr.io}"
VERSION="${VERSION:-0.1.0}"
IMAGE="${ACR}/spin-redis-patterns:${VERSION}"

spin build
az acr login --name "${ACR%%.*}"
spin registry push "$IMAGE"

kubectl apply -f deploy/azure-keyvault/serviceaccount.yaml
kubectl apply -f deploy/azure-keyvault/secretproviderclass.yaml
# The operator reads the fast path's store URL from the synced Secret before it creates any
# app pod: start the pod that syncs it, and wait for the Secret (see secret-sync.yaml).
kubectl apply -f deploy/azure-keyvault/secret-sync.yaml
kubectl rollout status deployment/spin-redis-patterns-secret-sync --timeout=300s
kubectl wait --for=create secret/spin-redis-patterns-redis --timeout=120s
# Where the Secret predates the store-url key, the key arrives with the driver's rotation poll
# (every two minutes; create-azure-resources.sh turns rotation on).
kubectl wait --for=jsonpath='{.data.store-url}' secret/spin-redis-patterns-redis --timeout=300s
sed "s|myregistry.azurecr.io/spin-redis-patterns:0.1.0|${IMAGE}|" deploy/azure-keyvault/spinapp.yaml \
  | kubectl apply -f -
# The operator creates the Deployment once it has rendered the runtime config.
kubectl wait --for=create deployment/spin-redis-patterns --timeout=120s
kubectl rollout status deployment/spin-redis-patterns --timeout=300s
