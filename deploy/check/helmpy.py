#!/usr/bin/env python3
"""`helm lint` and `helm template` for deploy/check.sh, without a helm binary.

The helm-python-sdk package (import name `helm_python`) ships no `helm` executable: it binds
Helm's Go SDK through a bundled shared library (libhelm_c). This script exposes the two
commands the checks need, with helm-like arguments:

    helmpy.py lint CHART [-f VALUES]... [--namespace NS] [--kube-version V]
    helmpy.py template NAME CHART [-f VALUES]... [--namespace NS]
    helmpy.py split RENDERED.yaml DIR     one file per manifest, for kubernetes-validate

`lint` is strict (warnings fail). `template` validates the values against the chart's schema,
renders offline and prints the manifests as one YAML stream with `# Source:` headers, like
`helm template` (NOTES.txt is rendered but not printed). Exit status 1 on any problem.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import helm_python as helm
import yaml

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def load_values(files: list[str]) -> dict[str, Any]:
    """Merges values files left to right, as repeated `helm -f` does."""
    merged: dict[str, Any] = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise SystemExit(f"{path}: values must be a mapping")
        merged = deep_merge(merged, data)
    return merged


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def cmd_lint(args: argparse.Namespace) -> int:
    report = helm.lint(
        args.chart,
        load_values(args.values),
        strict=True,
        namespace=args.namespace,
        kube_version=args.kube_version,
    )
    failed = False
    for msg in report.get("messages", []):
        severity = msg.get("severity", 0)
        failed |= severity >= 2
        print(
            f"[{SEVERITY.get(severity, severity)}] {msg.get('path')}: {msg.get('error', '').strip()}"
        )
    for err in report.get("errors", []):
        failed = True
        print(f"[ERROR] {err.strip()}")
    print(
        f"{report.get('total_charts_linted', 0)} chart(s) linted, {'failed' if failed else 'no failures'}"
    )
    return 1 if failed else 0


def cmd_template(args: argparse.Namespace) -> int:
    values = load_values(args.values)
    with helm.Chart.load(args.chart) as chart:
        chart.validate_schema(values)
        rendered = chart.render(values, name=args.name, namespace=args.namespace, is_install=True)
    for path in sorted(rendered):
        text = rendered[path].strip()
        if path.endswith("/NOTES.txt") or not text:
            continue
        for doc in text.split("\n---\n"):
            if doc.strip() and doc.strip() != "---":
                sys.stdout.write(f"---\n# Source: {path}\n{doc.strip()}\n")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    """Writes each manifest to DIR/NN-kind-name.yaml; prints `apiVersion kind name file` lines."""
    with open(args.rendered, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    os.makedirs(args.dir, exist_ok=True)
    for i, doc in enumerate(docs):
        kind, name = doc.get("kind", "?"), doc.get("metadata", {}).get("name", "?")
        path = os.path.join(args.dir, f"{i:02d}-{kind.lower()}-{name}.yaml")
        with open(path, "w", encoding="utf-8") as out:
            yaml.safe_dump(doc, out, sort_keys=False)
        print(doc.get("apiVersion", "?"), kind, name, path)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    lint = sub.add_parser("lint")
    lint.add_argument("chart")
    lint.add_argument("-f", "--values", action="append", default=[])
    lint.add_argument("--namespace", default="default")
    lint.add_argument("--kube-version", default=None)
    lint.set_defaults(run=cmd_lint)

    template = sub.add_parser("template")
    template.add_argument("name")
    template.add_argument("chart")
    template.add_argument("-f", "--values", action="append", default=[])
    template.add_argument("--namespace", default="default")
    template.set_defaults(run=cmd_template)

    split = sub.add_parser("split")
    split.add_argument("rendered")
    split.add_argument("dir")
    split.set_defaults(run=cmd_split)

    args = parser.parse_args()
    try:
        return int(args.run(args))
    except helm.HelmError as exc:
        print(f"Error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
