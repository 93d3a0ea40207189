#!/usr/bin/env python3
"""The chart and manifests/ must not drift: every object `kubectl kustomize
manifests/` renders must be rendered by the chart with its default values
(`helm template --include-crds -n aiops-system`), field for field, and the
chart may add only what manifests/ leaves to Helm.

Compared after removing what only Helm adds: its bookkeeping labels
(instance, version, managed-by, chart) wherever labels appear, and the name
label on objects' own metadata. Objects only
one side has by design: the Namespace (Helm's --create-namespace makes it)
and the PodDisruptionBudget and ServiceMonitor (chart options).

usage: drift.py CHART_RENDERED.yaml MANIFESTS_RENDERED.yaml
"""
import sys

import yaml

HELM_LABELS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}
ONLY_IN_MANIFESTS = {"Namespace"}
ONLY_IN_CHART = {"PodDisruptionBudget", "ServiceMonitor"}


def strip_helm_labels(node):
    if isinstance(node, dict):
        for key, value in list(node.items()):
            if key == "labels" and isinstance(value, dict):
                for label in HELM_LABELS:
                    value.pop(label, None)
                if not value:
                    del node[key]
            else:
                strip_helm_labels(value)
    elif isinstance(node, list):
        for item in node:
            strip_helm_labels(item)
    return node


def objects(path, skip):
    found = {}
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if not doc or doc.get("kind") in skip:
                continue
            meta = doc.get("metadata", {})
            key = (doc["kind"], meta.get("namespace", ""), meta["name"])
            if key in found:
                sys.exit(f"drift: {path} renders {key} twice")
            # Helm's convention puts the name label on every object; on an
            # object's own metadata it selects nothing, so it is not compared
            # there (selectors and pod templates keep it and are compared).
            meta.get("labels", {}).pop("app.kubernetes.io/name", None)
            found[key] = strip_helm_labels(doc)
    return found


def differences(a, b, path="$"):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a:
                yield f"{path}.{key}: only in manifests/: {b[key]!r}"[:300]
            elif key not in b:
                yield f"{path}.{key}: only in the chart: {a[key]!r}"[:300]
            else:
                yield from differences(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: chart {a!r} != manifests/ {b!r}"[:300]


def main():
    chart = objects(sys.argv[1], ONLY_IN_CHART)
    manifests = objects(sys.argv[2], ONLY_IN_MANIFESTS)
    problems = []
    for key in sorted(set(chart) | set(manifests)):
        if key not in chart:
            problems.append(f"{key}: in manifests/ but not rendered by the chart")
        elif key not in manifests:
            problems.append(f"{key}: rendered by the chart but not in manifests/")
        else:
            problems.extend(f"{key} {d}" for d in differences(chart[key], manifests[key]))
    if problems:
        print("drift: the chart and manifests/ disagree:", *problems, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    print(f"drift: ok, {len(manifests)} objects agree between the chart and manifests/")


if __name__ == "__main__":
    main()
