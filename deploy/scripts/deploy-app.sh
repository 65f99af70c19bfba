#!/usr/bin/env bash
# Builds the app, pushes it to Azure Container Registry as an OCI artifact, and applies the
# Key Vault variant of the manifests.
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
sed "s|myregistry.azurecr.io/spin-redis-patterns:0.1.0|${IMAGE}|" deploy/azure-keyvault/spinapp.yaml \
  | kubectl apply -f -
kubectl rollout status deployment/spin-redis-patterns --timeout=300s
