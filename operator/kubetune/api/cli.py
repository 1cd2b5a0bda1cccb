"""`kubetune crds`: write the generated CRDs (crds/ and the Helm chart's templated copy)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kubetune.api.crd import CHART_CRD_DIR, render_chart_crds, render_crds, write_chart_crds, write_crds


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "crds", help="generate the CustomResourceDefinitions from the API models"
    )
    parser.add_argument("--output-dir", "-o", type=Path, default=Path("crds"), help="where to write (default: crds/)")
    parser.add_argument(
        "--chart-dir",
        type=Path,
        default=CHART_CRD_DIR,
        help=f"where the chart's CRD templates go (default: {CHART_CRD_DIR}/, when run from the repository root); "
        "an empty value skips them",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the files on disk differ from the models")
    parser.set_defaults(run=run)


def _chart_dir(args: argparse.Namespace) -> Path | None:
    """Where the chart's CRD templates go; None when skipped (empty, or the default outside a checkout)."""
    if str(args.chart_dir) in ("", "."):
        return None
    chart_dir = Path(args.chart_dir)
    if chart_dir == CHART_CRD_DIR and not (CHART_CRD_DIR.parent.parent / "Chart.yaml").exists():
        return None  # not run from the repository root: don't create a stray helm/ folder
    return chart_dir


def _outputs(args: argparse.Namespace) -> list[tuple[Path, dict[str, str]]]:
    outputs = [(Path(args.output_dir), render_crds())]
    chart_dir = _chart_dir(args)
    if chart_dir is not None:
        outputs.append((chart_dir, render_chart_crds()))
    return outputs


def run(args: argparse.Namespace) -> int:
    if args.check:
        stale = [
            directory / name
            for directory, rendered in _outputs(args)
            for name, text in rendered.items()
            if not (directory / name).exists() or (directory / name).read_text() != text
        ]
        for path in stale:
            print(f"{path} is out of date: run `kubetune crds`")
        return 1 if stale else 0
    written = write_crds(args.output_dir)
    chart_dir = _chart_dir(args)
    if chart_dir is not None:
        written += write_chart_crds(chart_dir)
    for path in written:
        print(f"wrote {path}")
    return 0
