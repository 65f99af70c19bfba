#!/usr/bin/env bash
# Creates what the app needs in Azure: a resource group; a virtual network with a subnet for
# the cluster's nodes and one for private endpoints; Azure Managed Redis (the default;
# REDIS_KIND=cache for Azure Cache for Redis) with public network access disabled, reached
# through a private endpoint and its private DNS zone; a Key Vault holding the Redis settings,
# the fast path's store URL and the app's secrets; a second Key Vault for the ingress's TLS
# certificate only; a container registry; an AKS cluster in that network with workload
# identity, the Key Vault CSI add-on (secret rotation on), application routing (reading the TLS
# vault only), Azure CNI Overlay with Cilium (which enforces NetworkPolicy) and a dedicated,
# labelled node pool for Spin; and a managed identity the app's pods read the app vault with.
#
# An existing cluster is checked, not trusted: the script reads its pod CIDR (printed as
# POD_CIDR, which deploy-app.sh puts into ratelimit_trusted_proxies), and stops if it has no
# network policy engine, no OIDC issuer or workload identity, no application routing, a Spin
# pool without the shim's label, or nodes outside the network the private endpoint is in.
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
# The pod CIDR a new cluster gets (Azure CNI Overlay). For an existing cluster the script
# reads the real one instead; deploy-app.sh puts it into ratelimit_trusted_proxies.
POD_CIDR="${POD_CIDR:-10.244.0.0/16}"
# The network: nodes in one subnet, private endpoints in another. Pods are not in the VNet
# (overlay), so POD_CIDR must not overlap it.
VNET_PREFIX="10.224.0.0/16"
AKS_SUBNET_PREFIX="10.224.0.0/20"
PE_SUBNET_PREFIX="10.224.16.0/24"
# The Spin pool's VM size: 4 vCPUs fit five pods of 500m CPU beside the node's daemons
# (docs/deploy-aks.md, "Sizing").
SPIN_NODE_VM_SIZE="${SPIN_NODE_VM_SIZE:-Standard_D4ds_v5}"
# The label of the node pool runtime-class-manager installs the shim on
# (deploy/cluster/shim-spin.yaml's nodeSelector).
SPIN_NODE_LABEL="spinkube.dev/spin=true"

REDIS_NAME="${NAME}-redis"
VAULT_NAME="${NAME}-kv"
# The ingress certificate's vault: apart from the app's secrets, so that the app's identity
# cannot read the certificate's private key and application routing cannot read the secrets.
TLS_VAULT_NAME="${NAME}-tls-kv"
VNET_NAME="${NAME}-vnet"
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

log "virtual network $VNET_NAME"
exists az network vnet show --name "$VNET_NAME" --resource-group "$RG" ||
  run az network vnet create --name "$VNET_NAME" --resource-group "$RG" --location "$LOCATION" \
    --address-prefixes "$VNET_PREFIX" --output none
exists az network vnet subnet show --vnet-name "$VNET_NAME" --resource-group "$RG" --name aks ||
  run az network vnet subnet create --vnet-name "$VNET_NAME" --resource-group "$RG" --name aks \
    --address-prefixes "$AKS_SUBNET_PREFIX" --output none
exists az network vnet subnet show --vnet-name "$VNET_NAME" --resource-group "$RG" --name private-endpoints ||
  run az network vnet subnet create --vnet-name "$VNET_NAME" --resource-group "$RG" \
    --name private-endpoints --address-prefixes "$PE_SUBNET_PREFIX" --output none
AKS_SUBNET_ID=$(get "/subscriptions/<subscription>/resourceGroups/$RG/providers/Microsoft.Network/virtualNetworks/$VNET_NAME/subnets/aks" \
  az network vnet subnet show --vnet-name "$VNET_NAME" --resource-group "$RG" --name aks \
  --query id --output tsv)

if [ "$REDIS_KIND" = managed ]; then
  log "Azure Managed Redis $REDIS_NAME"
  # Enterprise clustering: one endpoint speaking the classic protocol (Spin's Redis client
  # cannot follow the OSS cluster protocol). Access keys must be enabled explicitly: Azure
  # Managed Redis defaults to Microsoft Entra ID only, which Spin 3.6.3 cannot use
  # (docs/deploy-aks.md, "Microsoft Entra ID").
  # Public network access disabled: Redis answers only through the private endpoint below.
  if exists az redisenterprise show --cluster-name "$REDIS_NAME" --resource-group "$RG"; then
    # Never `create` again: it overwrites the cluster. Only make sure access keys are on and
    # the public endpoint is off.
    run az redisenterprise database update --cluster-name "$REDIS_NAME" --resource-group "$RG" \
      --access-keys-auth Enabled --output none
    run az redisenterprise update --cluster-name "$REDIS_NAME" --resource-group "$RG" \
      --public-network-access Disabled --output none
  else
    run az redisenterprise create --cluster-name "$REDIS_NAME" --resource-group "$RG" \
      --location "$LOCATION" --sku Balanced_B1 --clustering-policy EnterpriseCluster \
      --access-keys-auth Enabled --public-network-access Disabled --minimum-tls-version 1.2 \
      --output none
  fi
  REDIS_ID=$(get "/subscriptions/<subscription>/resourceGroups/$RG/providers/Microsoft.Cache/redisEnterprise/$REDIS_NAME" \
    az redisenterprise show --cluster-name "$REDIS_NAME" --resource-group "$RG" --query id --output tsv)
  PRIVATE_DNS_ZONE=privatelink.redis.azure.net
  PE_GROUP=redisEnterprise
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
  # Public network access off, on every run (the cache's create takes no such option).
  run az redis update --name "$REDIS_NAME" --resource-group "$RG" \
    --set publicNetworkAccess=Disabled --output none
  REDIS_ID=$(get "/subscriptions/<subscription>/resourceGroups/$RG/providers/Microsoft.Cache/Redis/$REDIS_NAME" \
    az redis show --name "$REDIS_NAME" --resource-group "$RG" --query id --output tsv)
  PRIVATE_DNS_ZONE=privatelink.redis.cache.windows.net
  PE_GROUP=redisCache
  REDIS_HOST=$(get "$REDIS_NAME.redis.cache.windows.net" az redis show --name "$REDIS_NAME" \
    --resource-group "$RG" --query hostName --output tsv)
  REDIS_PORT=6380
  REDIS_KEY=$(get "<access key>" az redis list-keys --name "$REDIS_NAME" --resource-group "$RG" \
    --query "$REDIS_KEY_NAME" --output tsv)
fi

# The private endpoint: Redis gets an address in the private-endpoints subnet, and the private
# DNS zone, linked to the network, makes its usual host name resolve to that address inside
# the network. The host name, port, TLS and key stay as they were.
log "private endpoint for $REDIS_NAME"
exists az network private-dns zone show --name "$PRIVATE_DNS_ZONE" --resource-group "$RG" ||
  run az network private-dns zone create --name "$PRIVATE_DNS_ZONE" --resource-group "$RG" --output none
exists az network private-dns link vnet show --zone-name "$PRIVATE_DNS_ZONE" --resource-group "$RG" \
  --name "$VNET_NAME" ||
  run az network private-dns link vnet create --zone-name "$PRIVATE_DNS_ZONE" --resource-group "$RG" \
    --name "$VNET_NAME" --virtual-network "$VNET_NAME" --registration-enabled false --output none
exists az network private-endpoint show --name "$REDIS_NAME-pe" --resource-group "$RG" ||
  run az network private-endpoint create --name "$REDIS_NAME-pe" --resource-group "$RG" \
    --location "$LOCATION" --vnet-name "$VNET_NAME" --subnet private-endpoints \
    --private-connection-resource-id "$REDIS_ID" --group-id "$PE_GROUP" \
    --connection-name "$REDIS_NAME" --output none
exists az network private-endpoint dns-zone-group show --endpoint-name "$REDIS_NAME-pe" \
  --resource-group "$RG" --name default ||
  run az network private-endpoint dns-zone-group create --endpoint-name "$REDIS_NAME-pe" \
    --resource-group "$RG" --name default --private-dns-zone "$PRIVATE_DNS_ZONE" \
    --zone-name redis --output none

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

log "Key Vault $TLS_VAULT_NAME (the ingress certificate only)"
exists az keyvault show --name "$TLS_VAULT_NAME" --resource-group "$RG" ||
  run az keyvault create --name "$TLS_VAULT_NAME" --resource-group "$RG" --location "$LOCATION" \
    --enable-rbac-authorization true --output none
TLS_VAULT_ID=$(get "/subscriptions/<subscription>/resourceGroups/$RG/providers/Microsoft.KeyVault/vaults/$TLS_VAULT_NAME" \
  az keyvault show --name "$TLS_VAULT_NAME" --resource-group "$RG" --query id --output tsv)
# Who runs the script imports the certificate (docs/deploy-aks.md, section 5).
ensure_role "$ME" "$ME_TYPE" "Key Vault Certificates Officer" "$TLS_VAULT_ID"

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
for secret in otp-pepper sessions-api-token ratelimit-admin-token cache-purge-token otp-webhook-token ratelimit-identity-secret leaderboard-api-token locks-api-token otp-api-token ratelimit-api-token leaderboard-read-token cache-write-token cache-drain-token; do
  ensure_random_vault_secret "$secret"
done

log "container registry $ACR_NAME"
exists az acr show --name "$ACR_NAME" --resource-group "$RG" ||
  run az acr create --name "$ACR_NAME" --resource-group "$RG" --sku Basic --output none

log "AKS cluster $AKS_NAME"
# Azure CNI Overlay powered by Cilium: nodes in the aks subnet (so they reach the private
# endpoint), pods get addresses from POD_CIDR, and Cilium enforces the NetworkPolicy in
# deploy/platform/networkpolicy.yaml. --enable-app-routing: the managed NGINX ingress
# controller deploy/overlays/aks-secrets/ingress.yaml uses.
exists az aks show --name "$AKS_NAME" --resource-group "$RG" ||
  run az aks create --name "$AKS_NAME" --resource-group "$RG" --location "$LOCATION" \
    --nodepool-name system --node-count 2 --vnet-subnet-id "$AKS_SUBNET_ID" \
    --network-plugin azure --network-plugin-mode overlay --pod-cidr "$POD_CIDR" \
    --network-dataplane cilium \
    --enable-oidc-issuer --enable-workload-identity --enable-app-routing \
    --enable-addons azure-keyvault-secrets-provider --enable-secret-rotation \
    --attach-acr "$ACR_NAME" --generate-ssh-keys --output none
# The Spin pods' own pool: runtime-class-manager installs the shim on every node with this
# label, including nodes the autoscaler or an upgrade adds later.
exists az aks nodepool show --cluster-name "$AKS_NAME" --resource-group "$RG" --name spin ||
  run az aks nodepool add --cluster-name "$AKS_NAME" --resource-group "$RG" --name spin \
    --mode User --labels "$SPIN_NODE_LABEL" --node-count 2 --node-vm-size "$SPIN_NODE_VM_SIZE" \
    --vnet-subnet-id "$AKS_SUBNET_ID" \
    --enable-cluster-autoscaler --min-count 2 --max-count 6 --output none

# Whether the script just made the cluster or found it, check what the manifests rely on.
log "checking $AKS_NAME"
aks_show() { get "$1" az aks show --name "$AKS_NAME" --resource-group "$RG" --query "$2" --output tsv; }
actual_cidr=$(aks_show "$POD_CIDR" networkProfile.podCidr)
if [ -z "$actual_cidr" ] || [ "$actual_cidr" = None ]; then
  die "$AKS_NAME has no pod CIDR (not Azure CNI Overlay): pods share the node subnet; set POD_CIDR for deploy-app.sh to your ingress controller pods' range by hand (docs/deploy-aks.md, section 7)"
fi
[ "$actual_cidr" = "$POD_CIDR" ] || log "$AKS_NAME's pod CIDR is $actual_cidr, not $POD_CIDR: using $actual_cidr"
POD_CIDR=$actual_cidr
policy=$(aks_show cilium networkProfile.networkPolicy)
case "$policy" in
  cilium | calico | azure) ;;
  *) die "$AKS_NAME enforces no NetworkPolicy (networkPolicy '$policy'): deploy/platform/networkpolicy.yaml would be ignored, and ratelimit_trusted_proxies would trust forged X-Forwarded-For from any pod" ;;
esac
[ "$(aks_show true securityProfile.workloadIdentity.enabled)" = true ] ||
  die "$AKS_NAME has workload identity off: az aks update --enable-oidc-issuer --enable-workload-identity"
[ "$(aks_show true ingressProfile.webAppRouting.enabled)" = true ] ||
  die "$AKS_NAME has application routing off: az aks approuting enable"
label_key=${SPIN_NODE_LABEL%%=*}
pool_label=$(get "${SPIN_NODE_LABEL#*=}" az aks nodepool show --cluster-name "$AKS_NAME" --resource-group "$RG" \
  --name spin --query "nodeLabels.\"$label_key\"" --output tsv)
[ "$pool_label" = "${SPIN_NODE_LABEL#*=}" ] ||
  die "node pool spin lacks the label $SPIN_NODE_LABEL that deploy/cluster/shim-spin.yaml selects: az aks nodepool update --labels $SPIN_NODE_LABEL"
pool_subnet=$(get "$AKS_SUBNET_ID" az aks nodepool show --cluster-name "$AKS_NAME" --resource-group "$RG" \
  --name spin --query vnetSubnetId --output tsv)
[ "${pool_subnet,,}" = "${AKS_SUBNET_ID,,}" ] ||
  die "node pool spin is in $pool_subnet, not $VNET_NAME/aks: it cannot resolve or reach Redis's private endpoint; link $PRIVATE_DNS_ZONE to its network and peer it, or create the endpoint there (docs/deploy-aks.md, section 3)"

# Application routing reads the ingress certificate from the TLS vault, and only that one.
run az aks approuting update --name "$AKS_NAME" --resource-group "$RG" --enable-kv \
  --attach-kv "$TLS_VAULT_ID" --output none
run az aks get-credentials --name "$AKS_NAME" --resource-group "$RG" --overwrite-existing

log "workload identity $IDENTITY_NAME"
exists az identity show --name "$IDENTITY_NAME" --resource-group "$RG" ||
  run az identity create --name "$IDENTITY_NAME" --resource-group "$RG" --location "$LOCATION" --output none
CLIENT_ID=$(get "<client id>" az identity show --name "$IDENTITY_NAME" --resource-group "$RG" \
  --query clientId --output tsv)
PRINCIPAL_ID=$(get "<principal id>" az identity show --name "$IDENTITY_NAME" --resource-group "$RG" \
  --query principalId --output tsv)
ensure_role "$PRINCIPAL_ID" ServicePrincipal "Key Vault Secrets User" "$VAULT_ID"
ISSUER=$(get "https://<oidc issuer>/" az aks show --name "$AKS_NAME" --resource-group "$RG" \
  --query oidcIssuerProfile.issuerUrl --output tsv)
# An existing cluster without the OIDC issuer has none to federate with.
[[ $ISSUER == https://* ]] ||
  die "$AKS_NAME has no OIDC issuer: az aks update --enable-oidc-issuer --enable-workload-identity"
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
  VAULT_ID=$VAULT_ID
  TLS_VAULT_NAME=$TLS_VAULT_NAME
  TLS_VAULT_ID=$TLS_VAULT_ID
  POD_CIDR=$POD_CIDR
  ACR=$ACR_NAME.azurecr.io
  CLIENT_ID=$CLIENT_ID
  TENANT_ID=$TENANT_ID
OUT
