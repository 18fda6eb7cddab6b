#!/usr/bin/env python3
"""Strict validation of rendered Kubernetes manifests (scripts/validate-k8s.sh runs it).

Each document of each file given is checked:
- built-in kinds against the Kubernetes JSON schemas of --kubernetes (kubernetes-validate,
  strict: an unknown field is an error, as `kubectl apply --validate=strict` would say);
- custom resources against the vendored operator schemas in --schemas
  (<group>/<kind>_<version>.json, see k8s/schemas/SOURCES.md), made strict the same way
  (every object schema that lists its properties and does not preserve unknown fields
  refuses others), their metadata against the Kubernetes ObjectMeta schema;
- a kind with no schema at all is an error;
- Accrue's own rules the schemas cannot express: every pod runs as non-root with the
  RuntimeDefault seccomp profile, every container drops all capabilities, cannot
  escalate, has a read-only root filesystem and resource requests; every service
  Deployment has gRPC readiness on its own service name and gRPC liveness on `liveness`;
  every ConfigMap a pod names is rendered too.

Prints one line per problem and exits 1 if there is any.
"""
import argparse
import copy
import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def strict(schema):
    """A copy of an OpenAPI v3 CRD schema that refuses unknown fields."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def load_crd_schemas(root):
    schemas = {}
    for path in sorted(pathlib.Path(root).glob("*/*_*.json")):
        kind, version = path.stem.rsplit("_", 1)
        schemas[(f"{path.parent.name}/{version}", kind)] = strict(json.loads(path.read_text()))
    return schemas


def name_of(doc):
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('name', '?')}"


def check_schema(doc, version, crds):
    """Problems of one document against its schema."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    crd_key = (key[0], str(key[1]).lower())
    if crd_key in crds:
        problems = []
        validator = jsonschema.Draft7Validator(crds[crd_key])
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            problems.append(f"{where}: {error.message}")
        # The CRD schemas say only `metadata: object`: check it as Kubernetes does.
        stand_in = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata", {})}
        try:
            kubernetes_validate.validate(stand_in, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"metadata: {error.message}")
        return problems
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {key[0]} {key[1]} (Kubernetes {version} or k8s/schemas)"]
    except kubernetes_validate.ValidationError as error:
        where = "/".join(str(p) for p in error.path) or "(root)"
        return [f"{where}: {error.message}"]
    return []


def pod_spec(doc):
    spec = doc.get("spec") or {}
    if doc.get("kind") in POD_KINDS:
        return ((spec.get("template") or {}).get("spec")) or {}
    return None


def check_policy(doc, config_maps):
    """Accrue's hardening and probe rules for workloads."""
    pod = pod_spec(doc)
    if pod is None:
        return []
    problems = []
    security = pod.get("securityContext") or {}
    if security.get("runAsNonRoot") is not True:
        problems.append("pod securityContext.runAsNonRoot must be true")
    if (security.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("pod securityContext.seccompProfile.type must be RuntimeDefault")
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        name = container.get("name")
        sc = container.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"container {name}: readOnlyRootFilesystem must be true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"container {name}: capabilities.drop must include ALL")
        if not (container.get("resources") or {}).get("requests"):
            problems.append(f"container {name}: resources.requests must be set")
        refs = [e.get("configMapRef", {}).get("name") for e in container.get("envFrom", [])]
        refs += [
            ((e.get("valueFrom") or {}).get("configMapKeyRef") or {}).get("name") for e in container.get("env", [])
        ]
        for ref in filter(None, refs):
            if ref not in config_maps:
                problems.append(f"container {name}: ConfigMap {ref} is not in the rendered output")
    labels = (doc.get("metadata") or {}).get("labels") or {}
    if doc.get("kind") == "Deployment" and labels.get("app.kubernetes.io/component") == "service":
        for container in pod.get("containers", []):
            name = container.get("name")
            ready = (container.get("readinessProbe") or {}).get("grpc") or {}
            alive = (container.get("livenessProbe") or {}).get("grpc") or {}
            if not str(ready.get("service", "")).startswith("accrue."):
                problems.append(f"container {name}: readinessProbe must be gRPC on the service's own name")
            if alive.get("service") != "liveness":
                problems.append(f"container {name}: livenessProbe must be gRPC on service `liveness`")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubernetes", required=True, help="Kubernetes version, e.g. 1.32.0")
    parser.add_argument("--schemas", required=True, help="directory of vendored CRD schemas")
    parser.add_argument("files", nargs="+", help="rendered multi-document YAML files")
    args = parser.parse_args()
    crds = load_crd_schemas(args.schemas)
    failures = 0
    for file in args.files:
        label = pathlib.Path(file).name
        try:
            docs = [doc for doc in yaml.safe_load_all(pathlib.Path(file).read_text()) if doc]
        except yaml.YAMLError as error:
            print(f"{label}: not YAML: {error}")
            failures += 1
            continue
        config_maps = {(d.get("metadata") or {}).get("name") for d in docs if d.get("kind") == "ConfigMap"}
        for doc in docs:
            for problem in check_schema(doc, args.kubernetes, crds) + check_policy(doc, config_maps):
                print(f"{label}: {name_of(doc)}: {problem}")
                failures += 1
        print(f"{label}: {len(docs)} resources checked")
    if failures:
        print(f"{failures} problems")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
