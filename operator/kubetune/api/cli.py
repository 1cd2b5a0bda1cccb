"""`kubetune crds`: write the generated CRDs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kubetune.api.crd import render_crds, write_crds


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "crds", help="generate the CustomResourceDefinitions from the API models"
    )
    parser.add_argument("--output-dir", "-o", type=Path, default=Path("crds"), help="where to write (default: crds/)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the files on disk differ from the models")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    directory: Path = args.output_dir
    if args.check:
        stale = [
            name
            for name, text in render_crds().items()
            if not (directory / name).exists() or (directory / name).read_text() != text
        ]
        for name in stale:
            print(f"{directory / name} is out of date: run `kubetune crds`")
        return 1 if stale else 0
    for path in write_crds(directory):
        print(f"wrote {path}")
    return 0
