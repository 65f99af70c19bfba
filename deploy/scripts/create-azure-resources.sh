#!/usr/bin/env bash
# Creates what the app needs in Azure: a resource group; Azure Managed Redis (the default;
# REDIS_KIND=cache for Azure Cache for Redis); a Key Vault holding the Redis settings, the fast
# path's store URL and the app's secrets; a container registry; an AKS cluster with workload
# identity, the Key Vault CSI add-on (secret rotation on), application routing, Azure CNI
# Overlay with Cilium (which enforces NetworkPolicy) and a dedicated, labelled node pool for
# Spin; and a managed identity the app's pods read the vault with.
#
# Usage: RG=spin-redis LOCATION=westeurope NAME=contoso bash deploy/scripts/create-azure-resources.sh
#        DRY_RUN=1 ... prints the az calls instead of making them.
#
# Re-runnable: each resource is looked up first and created only if missing (`az ... create`
# on some existing resources, Azure Managed Redis among them, overwrites them). Secrets the
# script generated are never regenerated. Works signed in as a user or as a service principal
# (ASSIGNEE_OBJECT_ID overrides who gets the vault's officer role). No secret is ever put on a
# command line: values go to az through files in a private temporary directory.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
init_secrets_dir

: "${RG:?set RG, the resource group}"
: "${LOCATION:?set LOCATION, e.g. westeurope}"
: "${NAME:?set NAME, a short unique prefix (letters and digits)}"
REDIS_KIND="${REDIS_KIND:-managed}"
case "$REDIS_KIND" in
  managed | cache) ;;
  *) die "REDIS_KIND must be managed (Azure Managed Redis) or cache (Azure Cache for Redis)" ;;
esac
# Which of Redis's two access keys the app uses: switch to the other one to rotate
# (docs/deploy-aks.md, section 9).
REDIS_KEY_NAME="${REDIS_KEY_NAME:-primaryKey}"
case "$REDIS_KEY_NAME" in
  primaryKey | secondaryKey) ;;
  *) die "REDIS_KEY_NAME must be primaryKey or secondaryKey" ;;
esac
# The app's namespace and service account (deploy/platform/namespace.yaml,
# deploy/overlays/aks-keyvault/serviceaccount.yaml): the federated credential names them.
NAMESPACE="${NAMESPACE:-spin-redis-patterns}"
SERVICE_ACCOUNT="spin-redis-patterns"
# The pod CIDR, which the SpinApp's ratelimit_trusted_proxies names (deploy/base/spinapp.yaml).
POD_CIDR="10.244.0.0/16"
# The label of the node pool runtime-class-manager installs the shim on
# (deploy/cluster/shim-spin.yaml's nodeSelector).
SPIN_NODE_LABEL="spinkube.dev/spin=true"

REDIS_NAME="${NAME}-redis"
VAULT_NAME="${NAME}-kv"
ACR_NAME="${NAME}acr"
AKS_NAME="${NAME}-aks"
IDENTITY_NAME="${NAME}-spin-app"

# Assigns ROLE on SCOPE to the object id ASSIGNEE (of PRINCIPAL_TYPE) unless already assigned.
ensure_role() {
  local assignee=$1 principal_type=$2 role=$3 scope=$4 count
  # By object id and without Microsoft Graph look-ups, which a pipeline's service principal may
  # not be allowed to make.
  count=$(get 0 az role assignment list --assignee-object-id "$assignee" --role "$role" \
    --scope "$scope" --fill-principal-name false --query "length(@)" --output tsv)
  if [ "$count" = 0 ]; then
    run az role assignment create --assignee-object-id "$assignee" \
      --assignee-principal-type "$principal_type" --role "$role" --scope "$scope" --output none
  fi
}

# Sets the vault secret NAME to the content of FILE unless it already holds exactly that.
ensure_vault_secret_from_file() {
  local name=$1 file=$2 current=""
  if exists az keyvault secret show --vault-name "$VAULT_NAME" --name "$name"; then
    current=$(az keyvault secret show --vault-name "$VAULT_NAME" --name "$name" --query value --output tsv)
  fi
  if [ "$DRY_RUN" = 1 ] || [ "$current" != "$(cat "$file")" ]; then
    run az keyvault secret set --vault-name "$VAULT_NAME" --name "$name" --file "$file" \
      --encoding utf-8 --output none
  fi
}

# Creates the vault secret NAME with a long random value, only if it does not exist: these are
# the app's own secrets (the OTP pepper, route tokens), and replacing one invalidates what was
# issued under it.
ensure_random_vault_secret() {
  local name=$1 file
  if ! exists az keyvault secret show --vault-name "$VAULT_NAME" --name "$name"; then
    file="$SECRETS_DIR/$name"
    openssl rand -base64 32 | tr -d '\n' >"$file"
    run az keyvault secret set --vault-name "$VAULT_NAME" --name "$name" --file "$file" \
      --encoding utf-8 --output none
  fi
}

log "resource group $RG"
exists az group show --name "$RG" ||
  run az group create --name "$RG" --location "$LOCATION" --output none

if [ "$REDIS_KIND" = managed ]; then
  log "Azure Managed Redis $REDIS_NAME"
  # Enterprise clustering: one endpoint speaking the classic protocol (Spin's Redis client
  # cannot follow the OSS cluster protocol). Access keys must be enabled explicitly: Azure
  # Managed Redis defaults to Microsoft Entra ID only, which Spin 3.6.3 cannot use
  # (docs/deploy-aks.md, "Microsoft Entra ID").
  if exists az redisenterprise show --cluster-name "$REDIS_NAME" --resource-group "$RG"; then
    # Never `create` again: it overwrites the cluster. Only make sure access keys are on.
    run az redisenterprise database update --cluster-name "$REDIS_NAME" --resource-group "$RG" \
      --access-keys-auth Enabled --output none
  else
    run az redisenterprise create --cluster-name "$REDIS_NAME" --resource-group "$RG" \
      --location "$LOCATION" --sku Balanced_B1 --clustering-policy EnterpriseCluster \
      --access-keys-auth Enabled --public-network-access Enabled --minimum-tls-version 1.2 \
      --output none
  fi
  REDIS_HOST=$(get "$REDIS_NAME.$LOCATION.redis.azure.net" az redisenterprise show \
    --cluster-name "$REDIS_NAME" --resource-group "$RG" --query hostName --output tsv)
  REDIS_PORT=10000
  REDIS_KEY=$(get "<access key>" az redisenterprise database list-keys --cluster-name "$REDIS_NAME" \
    --resource-group "$RG" --query "$REDIS_KEY_NAME" --output tsv)
else
  log "Azure Cache for Redis $REDIS_NAME"
  # TLS 1.2 on 6380; the non-TLS port 6379 stays disabled (the default).
  exists az redis show --name "$REDIS_NAME" --resource-group "$RG" ||
    run az redis create --name "$REDIS_NAME" --resource-group "$RG" --location "$LOCATION" \
      --sku Standard --vm-size c1 --minimum-tls-version 1.2 --output none
  REDIS_HOST=$(get "$REDIS_NAME.redis.cache.windows.net" az redis show --name "$REDIS_NAME" \
    --resource-group "$RG" --query hostName --output tsv)
  REDIS_PORT=6380
  REDIS_KEY=$(get "<access key>" az redis list-keys --name "$REDIS_NAME" --resource-group "$RG" \
    --query "$REDIS_KEY_NAME" --output tsv)
fi

log "Key Vault $VAULT_NAME"
exists az keyvault show --name "$VAULT_NAME" --resource-group "$RG" ||
  run az keyvault create --name "$VAULT_NAME" --resource-group "$RG" --location "$LOCATION" \
    --enable-rbac-authorization true --output none
VAULT_ID=$(get "/subscriptions/<subscription>/resourceGroups/$RG/providers/Microsoft.KeyVault/vaults/$VAULT_NAME" \
  az keyvault show --name "$VAULT_NAME" --resource-group "$RG" --query id --output tsv)

# Who runs this script gets to write the vault's secrets: a user, or a service principal
# (a pipeline), for which `az ad signed-in-user show` does not work.
if [ -n "${ASSIGNEE_OBJECT_ID:-}" ]; then
  ME="$ASSIGNEE_OBJECT_ID"
  ME_TYPE="${ASSIGNEE_PRINCIPAL_TYPE:-ServicePrincipal}"
elif [ "$(get user az account show --query user.type --output tsv)" = servicePrincipal ]; then
  ME=$(az ad sp show --id "$(az account show --query user.name --output tsv)" --query id --output tsv)
  ME_TYPE=ServicePrincipal
else
  ME=$(get "<your object id>" az ad signed-in-user show --query id --output tsv)
  ME_TYPE=User
fi
ensure_role "$ME" "$ME_TYPE" "Key Vault Secrets Officer" "$VAULT_ID"

# A new role assignment takes a while (up to minutes) to reach Key Vault's data plane: wait
# until this identity can list secrets before writing any.
if [ "$DRY_RUN" = 0 ]; then
  for attempt in $(seq 1 30); do
    az keyvault secret list --vault-name "$VAULT_NAME" --output none 2>/dev/null && break
    [ "$attempt" = 30 ] && die "the Key Vault Secrets Officer role did not take effect in 5 minutes"
    log "waiting for the role assignment to propagate ($attempt/30)"
    sleep 10
  done
fi

# Key Vault names allow letters, digits and dashes; deploy/overlays/aks-keyvault/
# secretproviderclass.yaml maps these to the Secret keys every overlay reads.
log "vault secrets"
dir="$SECRETS_DIR"
printf '%s' "$REDIS_HOST" >"$dir/redis-host"
printf '%s' "$REDIS_PORT" >"$dir/redis-port"
printf '%s' "$REDIS_KEY" >"$dir/redis-access-key"
# The pooled fast path's store URL (rediss://:<percent-encoded key>@host:port): it holds the
# key too, so rotating the key means updating both. REDIS_KEY reaches the helper through its
# environment, not its arguments.
REDIS_HOST="$REDIS_HOST" REDIS_PORT="$REDIS_PORT" REDIS_KEY="$REDIS_KEY" \
  bash "$(dirname "$0")/redis-store-url.sh" | tr -d '\n' >"$dir/redis-store-url"
for secret in redis-host redis-port redis-access-key redis-store-url; do
  ensure_vault_secret_from_file "$secret" "$dir/$secret"
done
# The app's own secrets: long random values, generated here, never printed nor regenerated.
for secret in otp-pepper sessions-api-token ratelimit-admin-token cache-purge-token otp-webhook-token ratelimit-identity-secret leaderboard-api-token locks-api-token otp-api-token ratelimit-api-token leaderboard-read-token; do
  ensure_random_vault_secret "$secret"
done

log "container registry $ACR_NAME"
exists az acr show --name "$ACR_NAME" --resource-group "$RG" ||
  run az acr create --name "$ACR_NAME" --resource-group "$RG" --sku Basic --output none

log "AKS cluster $AKS_NAME"
# Azure CNI Overlay powered by Cilium: pods get addresses from POD_CIDR, and Cilium enforces
# the NetworkPolicy in deploy/platform/networkpolicy.yaml. --enable-app-routing: the managed
# NGINX ingress controller deploy/overlays/aks-secrets/ingress.yaml uses.
exists az aks show --name "$AKS_NAME" --resource-group "$RG" ||
  run az aks create --name "$AKS_NAME" --resource-group "$RG" --location "$LOCATION" \
    --nodepool-name system --node-count 2 \
    --network-plugin azure --network-plugin-mode overlay --pod-cidr "$POD_CIDR" \
    --network-dataplane cilium \
    --enable-oidc-issuer --enable-workload-identity --enable-app-routing \
    --enable-addons azure-keyvault-secrets-provider --enable-secret-rotation \
    --attach-acr "$ACR_NAME" --generate-ssh-keys --output none
# The Spin pods' own pool: runtime-class-manager installs the shim on every node with this
# label, including nodes the autoscaler or an upgrade adds later.
exists az aks nodepool show --cluster-name "$AKS_NAME" --resource-group "$RG" --name spin ||
  run az aks nodepool add --cluster-name "$AKS_NAME" --resource-group "$RG" --name spin \
    --mode User --labels "$SPIN_NODE_LABEL" --node-count 2 \
    --enable-cluster-autoscaler --min-count 2 --max-count 6 --output none
run az aks get-credentials --name "$AKS_NAME" --resource-group "$RG" --overwrite-existing

log "workload identity $IDENTITY_NAME"
exists az identity show --name "$IDENTITY_NAME" --resource-group "$RG" ||
  run az identity create --name "$IDENTITY_NAME" --resource-group "$RG" --location "$LOCATION" --output none
CLIENT_ID=$(get "<client id>" az identity show --name "$IDENTITY_NAME" --resource-group "$RG" \
  --query clientId --output tsv)
PRINCIPAL_ID=$(get "<principal id>" az identity show --name "$IDENTITY_NAME" --resource-group "$RG" \
  --query principalId --output tsv)
ensure_role "$PRINCIPAL_ID" ServicePrincipal "Key Vault Secrets User" "$VAULT_ID"
ISSUER=$(get "<oidc issuer>" az aks show --name "$AKS_NAME" --resource-group "$RG" \
  --query oidcIssuerProfile.issuerUrl --output tsv)
exists az identity federated-credential show --name spin-redis-patterns \
  --identity-name "$IDENTITY_NAME" --resource-group "$RG" ||
  run az identity federated-credential create --name spin-redis-patterns \
    --identity-name "$IDENTITY_NAME" --resource-group "$RG" --issuer "$ISSUER" \
    --subject "system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}" \
    --audiences api://AzureADTokenExchange --output none

TENANT_ID=$(get "<tenant id>" az account show --query tenantId --output tsv)
cat <<OUT
Done. Put these into the manifests (docs/deploy-aks.md, section 5):
  REDIS_HOST=$REDIS_HOST
  REDIS_PORT=$REDIS_PORT
  VAULT_NAME=$VAULT_NAME
  ACR=$ACR_NAME.azurecr.io
  CLIENT_ID=$CLIENT_ID
  TENANT_ID=$TENANT_ID
OUT
