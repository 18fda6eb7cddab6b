#!/usr/bin/env bash
# Renders the Kubernetes overlays with kustomize and validates them strictly:
# built-in resources against the Kubernetes 1.32 schemas, the CloudNativePG,
# Barman Cloud and prometheus-operator resources against the CRD schemas
# vendored in k8s/schemas (versions in k8s/schemas/SOURCES.md), plus
# Accrue's own hardening and probe rules (scripts/validate_k8s.py). Exits
# non-zero on the first overlay that does not render or on any problem.
#
#   scripts/validate-k8s.sh                 # k8s/overlays/dev and production
#   scripts/validate-k8s.sh DIR...          # other kustomization directories
#
# Tools are installed into a cache on first use (scripts/tools.sh); later
# runs work offline.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/tools.sh
source scripts/tools.sh

KUBERNETES_VERSION=1.32.0

venv="$(accrue_tools_venv)"
kubectl="$(accrue_kubectl)"
echo "kustomize: $("$kubectl" version --client 2>/dev/null | grep -i kustomize || echo "?") ($kubectl)"
echo "kubernetes-validate: $("$venv/bin/pip" show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p'), schemas of Kubernetes $KUBERNETES_VERSION"

if [ "$#" -eq 0 ]; then
    set -- k8s/overlays/dev k8s/overlays/production
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
rendered=()
for dir in "$@"; do
    file="$out/$(echo "${dir%/}" | sed 's#^\./##; s#/#_#g').yaml"
    if ! "$kubectl" kustomize "$dir" >"$file"; then
        echo "error: $dir does not render" >&2
        exit 1
    fi
    rendered+=("$file")
    echo "rendered $dir: $(grep -c '^kind:' "$file") resources"
done

"$venv/bin/python" scripts/validate_k8s.py --kubernetes "$KUBERNETES_VERSION" --schemas k8s/schemas "${rendered[@]}"
echo "k8s manifests valid"
