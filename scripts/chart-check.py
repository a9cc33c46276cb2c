#!/usr/bin/env python3
"""Checks the Helm chart charts/medforge with Helm's own engine.

Run with the virtualenv scripts/install-deps.sh makes (helm-python-sdk,
pinned in scripts/helm-requirements.txt):

    /opt/medforge/tools/helm/bin/python scripts/chart-check.py [--out DIR] [--write]

It lints the chart strictly (any warning or error fails) with the default
values and with every values file in charts/medforge/ci/, renders it with
each, writes each rendering (every template's output, NOTES.txt left out,
in template order) to DIR/<name>.yaml (default target/chart; tests/chart.rs
reads them), and compares the default rendering with the committed golden
copy charts/medforge/golden/default.yaml: a difference fails with the diff
and the command that regenerates it (`--write`).
"""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from pathlib import Path

import helm_python as helm

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "medforge"
GOLDEN = CHART / "golden" / "default.yaml"
RELEASE = "medforge"
# The scheduler's Lease lives in medforge-system (fixed in the code): the
# release goes there too (docs/operations.md).
NAMESPACE = "medforge-system"
# Lint messages at or above this severity fail (1 info, 2 warning, 3 error).
WARNING = 2


def lint(values: dict | None, label: str) -> list[str]:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    problems = [f"{label}: {e}" for e in report.get("errors") or []]
    for m in report.get("messages") or []:
        if m["severity"] >= WARNING:
            problems.append(f"{label}: {m['path']}: {m['error']}")
    return problems


def render(values: dict | None) -> str:
    chart = helm.Chart.load(CHART)
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        body = manifests[path].strip("\n")
        if not body.strip():
            continue
        # Each template may hold several documents already (`---`).
        if not body.lstrip().startswith("---"):
            body = "---\n" + body
        docs.append(f"# Source: {path}\n{body}\n")
    return "".join(docs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "target" / "chart",
                        help="where the renderings go (default: target/chart)")
    parser.add_argument("--write", action="store_true",
                        help="write the default rendering as the golden copy")
    args = parser.parse_args()
    started = time.monotonic()

    sets: list[tuple[str, dict | None]] = [("default", None)]
    for f in sorted((CHART / "ci").glob("*.yaml")):
        sets.append((f.stem, helm.values_from_yaml(f.read_text())))

    problems: list[str] = []
    args.out.mkdir(parents=True, exist_ok=True)
    rendered: dict[str, str] = {}
    for name, values in sets:
        problems += lint(values, f"lint ({name})")
        try:
            rendered[name] = render(values)
        except helm.HelmError as e:
            problems.append(f"render ({name}): {e}")
            continue
        (args.out / f"{name}.yaml").write_text(rendered[name])
    if problems:
        print("chart-check: the chart has problems:", *problems, sep="\n  ", file=sys.stderr)
        return 1

    regenerate = f"{sys.executable} scripts/chart-check.py --write"
    if args.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(rendered["default"])
        print(f"chart-check: wrote {GOLDEN.relative_to(ROOT)}")
    elif not GOLDEN.exists() or GOLDEN.read_text() != rendered["default"]:
        old = GOLDEN.read_text().splitlines(keepends=True) if GOLDEN.exists() else []
        diff = difflib.unified_diff(old, rendered["default"].splitlines(keepends=True),
                                    "charts/medforge/golden/default.yaml", "rendered now")
        sys.stderr.writelines(diff)
        print(f"\nchart-check: the default rendering differs from the golden copy "
              f"(above). If the change is intended, regenerate it with:\n  {regenerate}",
              file=sys.stderr)
        return 1
    took = time.monotonic() - started
    print(f"chart-check: lint clean and rendered {', '.join(rendered)} "
          f"into {args.out} in {took:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
