#!/usr/bin/env bash
# Creates everything the app needs in Azure: a resource group, a Redis (Azure Cache for
# Redis, or Azure Managed Redis with REDIS_KIND=managed), a Key Vault holding the access
# key and the fast path's store URL, a container registry, an AKS cluster with workload
# identity and the Key Vault CSI add-on (secret rotation on: it re-reads the vault every two
# minutes and updates the synced Kubernetes Secrets), and a managed identity the app's pods
# use to read the vault.
#
# Usage: RG=spin-redis LOCATION=westeurope NAME=contoso bash create-azure-resources.sh
# Prints the values the manifests need at the end. Safe to re-run: `az ... create` on an
# existing resource with the same settings is a no-op.
set -euo pipefail

: "${RG:?set RG, the resource group}"
: "${LOCATION:?set LOCATION, e.g. westeurope}"
: "${NAME:?set NAME, a short unique prefix (letters and digits)}"
REDIS_KIND="${REDIS_KIND:-cache}"   # cache: Azure Cache for Redis (6380); managed: Azure Managed Redis (10000)
NAMESPACE="${NAMESPACE:-default}"
SERVICE_ACCOUNT="spin-redis-patterns"

REDIS_NAME="${NAME}-redis"
VAULT_NAME="${NAME}-kv"
ACR_NAME="${NAME}acr"
AKS_NAME="${NAME}-aks"
IDENTITY_NAME="${NAME}-spin-app"

az group create --name "$RG" --location "$LOCATION" --output none

if [ "$REDIS_KIND" = "managed" ]; then
  # Enterprise clustering: one endpoint, classic protocol. Spin's Redis client cannot
  # follow the OSS cluster protocol, so never choose OSSCluster for this app.
  az redisenterprise create --cluster-name "$REDIS_NAME" --resource-group "$RG" \
    --location "$LOCATION" --sku Balanced_B1 --clustering-policy EnterpriseCluster \
    --access-keys-auth Enabled --output none
  REDIS_HOST=$(az redisenterprise show --cluster-name "$REDIS_NAME" --resource-group "$RG" \
    --query hostName --output tsv)
  REDIS_PORT=10000
  REDIS_KEY=$(az redisenterprise database list-keys --cluster-name "$REDIS_NAME" \
    --resource-group "$RG" --query primaryKey --output tsv)
else
  # TLS 1.2 on 6380; the non-TLS port 6379 stays disabled (the default).
  az redis create --name "$REDIS_NAME" --resource-group "$RG" --location "$LOCATION" \
    --sku Standard --vm-size c1 --minimum-tls-version 1.2 --output none
  REDIS_HOST=$(az redis show --name "$REDIS_NAME" --resource-group "$RG" --query hostName --output tsv)
  REDIS_PORT=6380
  REDIS_KEY=$(az redis list-keys --name "$REDIS_NAME" --resource-group "$RG" --query primaryKey --output tsv)
fi

# Key Vault names allow letters, digits and dashes: redis-access-key, redis-host,
# redis-store-url and the app secrets below (deploy/azure-keyvault/secretproviderclass.yaml maps them to Secret keys).
az keyvault create --name "$VAULT_NAME" --resource-group "$RG" --location "$LOCATION" \
  --enable-rbac-authorization true --output none
VAULT_ID=$(az keyvault show --name "$VAULT_NAME" --query id --output tsv)
ME=$(az ad signed-in-user show --query id --output tsv)
az role assignment create --assignee "$ME" --role "Key Vault Secrets Officer" --scope "$VAULT_ID" --output none
az keyvault secret set --vault-name "$VAULT_NAME" --name redis-access-key --value "$REDIS_KEY" --output none
az keyvault secret set --vault-name "$VAULT_NAME" --name redis-host --value "$REDIS_HOST" --output none
# The pooled fast path's store URL (rediss://:<percent-encoded key>@host:port): it holds the
# key too, so rotating the key means updating both vault secrets.
REDIS_STORE_URL=$(REDIS_HOST="$REDIS_HOST" REDIS_PORT="$REDIS_PORT" REDIS_KEY="$REDIS_KEY" \
  bash "$(dirname "$0")/redis-store-url.sh")
az keyvault secret set --vault-name "$VAULT_NAME" --name redis-store-url --value "$REDIS_STORE_URL" --output none
# The app's own secrets: long random values, generated here and never printed.
for secret in otp-pepper sessions-api-token ratelimit-admin-token cache-purge-token; do
  az keyvault secret set --vault-name "$VAULT_NAME" --name "$secret" --value "$(openssl rand -base64 32)" --output none
done
# Set to the token your OTP delivery webhook expects (empty: no webhook).
az keyvault secret set --vault-name "$VAULT_NAME" --name otp-webhook-token --value "${OTP_WEBHOOK_TOKEN:-none}" --output none

az acr create --name "$ACR_NAME" --resource-group "$RG" --sku Basic --output none

az aks create --name "$AKS_NAME" --resource-group "$RG" --location "$LOCATION" \
  --node-count 2 --enable-oidc-issuer --enable-workload-identity \
  --enable-addons azure-keyvault-secrets-provider --enable-secret-rotation --attach-acr "$ACR_NAME" \
  --generate-ssh-keys --output none
az aks get-credentials --name "$AKS_NAME" --resource-group "$RG" --overwrite-existing

# The pods' identity: may read the vault's secrets, federated with the app's service account.
az identity create --name "$IDENTITY_NAME" --resource-group "$RG" --location "$LOCATION" --output none
CLIENT_ID=$(az identity show --name "$IDENTITY_NAME" --resource-group "$RG" --query clientId --output tsv)
PRINCIPAL_ID=$(az identity show --name "$IDENTITY_NAME" --resource-group "$RG" --query principalId --output tsv)
az role assignment create --assignee-object-id "$PRINCIPAL_ID" --assignee-principal-type ServicePrincipal \
  --role "Key Vault Secrets User" --scope "$VAULT_ID" --output none
ISSUER=$(az aks show --name "$AKS_NAME" --resource-group "$RG" --query oidcIssuerProfile.issuerUrl --output tsv)
az identity federated-credential create --name spin-redis-patterns --identity-name "$IDENTITY_NAME" \
  --resource-group "$RG" --issuer "$ISSUER" \
  --subject "system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}" \
  --audience api://AzureADTokenExchange --output none

TENANT_ID=$(az account show --query tenantId --output tsv)
cat <<OUT
Created. Put these into the manifests (docs/deploy-aks.md, step 5):
  REDIS_HOST=$REDIS_HOST
  REDIS_PORT=$REDIS_PORT
  VAULT_NAME=$VAULT_NAME
  ACR=$ACR_NAME.azurecr.io
  CLIENT_ID=$CLIENT_ID
  TENANT_ID=$TENANT_ID
OUT
