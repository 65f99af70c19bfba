#!/usr/bin/env bash
# Writes the CA bundle for the executor (deploy/platform/executor.yaml): the root certificates
# that Azure's Redis endpoints (Azure Managed Redis, Azure Cache for Redis) may chain to,
# concatenated in PEM, taken from the Mozilla root store that Debian's and Ubuntu's
# ca-certificates package installs. Several roots on purpose: Azure moves its services between
# these roots and warns against trusting only one; and few enough that OpenSSL, which Spin
# 3.6.3 makes parse the whole file on every outbound Redis connection, parses 5 roots instead
# of ~140. Fails if a root is missing from CA_DIR or has expired.
#
# Usage: bash deploy/scripts/build-ca-bundle.sh > azure-redis-roots.pem
#        (CA_DIR=/path/to/dir-of-NAME.crt to read the roots from elsewhere)
set -euo pipefail

CA_DIR="${CA_DIR:-/usr/share/ca-certificates/mozilla}"
# The file names the ca-certificates package gives these roots.
ROOTS=(
  DigiCert_Global_Root_G2
  DigiCert_Global_Root_G3
  DigiCert_Global_Root_CA
  Microsoft_RSA_Root_Certificate_Authority_2017
  Microsoft_ECC_Root_Certificate_Authority_2017
)

command -v openssl >/dev/null || { echo "error: openssl is needed to check the roots" >&2; exit 1; }
for root in "${ROOTS[@]}"; do
  file="$CA_DIR/$root.crt"
  [ -r "$file" ] || { echo "error: $file not found (install ca-certificates, or set CA_DIR)" >&2; exit 1; }
  # -checkend 0: fails if the certificate has expired.
  openssl x509 -in "$file" -noout -checkend 0 >/dev/null ||
    { echo "error: $root has expired: update this list (docs/deploy-aks.md, section 3)" >&2; exit 1; }
  cat "$file"
done
