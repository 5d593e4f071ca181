#!/usr/bin/env python3
"""Render (and lint) a Helm chart offline, like `helm template` / `helm lint --strict`.

Uses helm-python-sdk (PyPI), which binds Helm's own Go SDK (Helm v4, libhelm_c) through ctypes:
the real Helm template engine, Sprig functions and values-schema validation, without a `helm`
binary (none is packaged on PyPI, npm or Debian). Run it with the venv made by
scripts/setup-deploy-tools.sh.

  helm-render.py CHART [-f values.yaml]... [--name N] [--namespace NS] [-o OUT] [--lint]
"""

import argparse
import re
import sys

import helm_python as helm


# Helm's install order (pkg/release/util/kind_sorter.go), so `kubectl apply -f` of the output
# creates the Namespace first; kinds not listed go last.
INSTALL_ORDER = [
    "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodDisruptionBudget", "ServiceAccount",
    "Secret", "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service",
    "DaemonSet", "Pod", "ReplicaSet", "Deployment", "StatefulSet", "Job", "CronJob",
]


def kind_rank(doc: str) -> int:
    m = re.search(r"^kind:\s*(\S+)", doc, re.M)
    kind = m.group(1) if m else ""
    return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)


def merge(dst: dict, src: dict) -> dict:
    """Deep merge like Helm's successive -f files (maps merge, everything else replaces)."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("chart")
    p.add_argument("-f", "--values", action="append", default=[], help="values file (repeatable)")
    p.add_argument("--name", default="ollama-tracer", help="release name")
    p.add_argument("--namespace", default="ollama-tracer")
    p.add_argument("-o", "--output", default="-", help="multi-document YAML out (default stdout)")
    p.add_argument("--lint", action="store_true", help="also run `helm lint --strict` with these values")
    p.add_argument("--kube-version", default=None, help="for --lint, e.g. v1.37.0")
    a = p.parse_args()

    values: dict = {}
    for f in a.values:
        with open(f, encoding="utf-8") as fh:
            values = merge(values, helm.values_from_yaml(fh.read()) or {})

    if a.lint:
        report = helm.lint(a.chart, values, strict=True, namespace=a.namespace, kube_version=a.kube_version)
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + [
            {"severity": 3, "path": "", "error": e} for e in report.get("errors") or []
        ]
        for m in problems:
            print(f"helm lint: {m.get('path', '')}: {m.get('error')}", file=sys.stderr)
        if problems:
            return 1

    with helm.Chart.load(a.chart) as chart:
        chart.validate_schema(values)
        rendered = chart.render(values, name=a.name, namespace=a.namespace, is_install=True)

    docs = []
    for path in sorted(rendered):
        text = rendered[path]
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        # A template may hold several documents; keep Helm's "# Source:" header like `helm template`.
        for doc in text.split("\n---\n"):
            if doc.strip() and any(line.strip() and not line.lstrip().startswith("#") for line in doc.splitlines()):
                docs.append(f"# Source: {path}\n{doc.strip()}\n")
    docs.sort(key=kind_rank)  # stable: template path order within a kind
    out = "---\n" + "---\n".join(docs)
    if a.output == "-":
        sys.stdout.write(out)
    else:
        with open(a.output, "w", encoding="utf-8") as fh:
            fh.write(out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except helm.HelmError as e:
        print(f"helm: {e}", file=sys.stderr)
        sys.exit(1)
