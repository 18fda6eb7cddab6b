#!/usr/bin/env python3
"""Extracts the openAPIV3Schema of every served version of a CustomResourceDefinition
(a YAML file, or '-' for stdin) into k8s/schemas/<group>/<kind>_<version>.json, the
layout scripts/validate_k8s.py looks schemas up in.

Used to refresh the vendored operator schemas (see k8s/schemas/SOURCES.md), e.g.
    git show v1.30.0:config/crd/bases/postgresql.cnpg.io_clusters.yaml \
        | scripts/extract-crd-schema.py - k8s/schemas
The schema is stored as the CRD has it; strictness (no unknown fields) is added when
validating, not here, so a refresh is a plain diff of upstream's text.
"""
import json
import pathlib
import sys

import yaml


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    source, out = sys.argv[1], pathlib.Path(sys.argv[2])
    text = sys.stdin.read() if source == "-" else pathlib.Path(source).read_text()
    written = 0
    for crd in yaml.safe_load_all(text):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", False):
                continue
            path = out / group / f"{kind.lower()}_{version['name']}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            schema = version["schema"]["openAPIV3Schema"]
            path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
            print(f"{path}: {group}/{version['name']} {kind}")
            written += 1
    if written == 0:
        print(f"{source}: no served CRD version found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
