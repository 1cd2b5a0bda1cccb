"""`kubetune suggest` and `kubetune stop`: the search engine from the command line.

    kubetune suggest -f job.yaml --history trials.json -n 4
    kubetune stop -f job.yaml --history trials.json

`-f` takes a TuningJob manifest or a bare spec (YAML or JSON); `--history` a
JSON list of trial entries (see `kubetune.search.suggest`), `-` for stdin,
omitted for none. Output is JSON on stdout; bad input is a message on stderr
and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kubetune.search._errors import SearchError


def register(subparsers: Any) -> None:
    suggest_parser: argparse.ArgumentParser = subparsers.add_parser(
        "suggest", help="print the next parameter assignments for a TuningJob and its trial history"
    )
    _common(suggest_parser)
    suggest_parser.add_argument("-n", type=int, default=1, help="how many assignments (default 1)")
    suggest_parser.set_defaults(run=run_suggest)
    stop_parser: argparse.ArgumentParser = subparsers.add_parser(
        "stop", help="print the Running trials the job's early-stopping rule stops now"
    )
    _common(stop_parser)
    stop_parser.set_defaults(run=run_stop)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True, help="TuningJob manifest or bare spec (YAML/JSON)")
    parser.add_argument("--history", default=None, help="JSON list of trial entries ('-' for stdin)")


def load_spec_file(path: str) -> dict[str, Any]:
    """The `spec` of a TuningJob manifest, or the document itself when it is a bare spec."""
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SearchError(f"cannot read {path}: {error}") from None
    if not isinstance(document, dict):
        raise SearchError(f"{path}: expected a TuningJob manifest or spec mapping")
    if document.get("kind") == "TuningJob" or "apiVersion" in document:
        spec = document.get("spec")
        if not isinstance(spec, dict):
            raise SearchError(f"{path}: the manifest has no spec mapping")
        return spec
    return document


def load_history(path: str | None) -> Any:
    if path is None:
        return []
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as error:
        raise SearchError(f"cannot read history {path}: {error}") from None


def run_suggest(args: argparse.Namespace) -> int:
    from kubetune.search import suggest

    try:
        result = suggest(load_spec_file(args.filename), load_history(args.history), args.n)
    except SearchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def run_stop(args: argparse.Namespace) -> int:
    from kubetune.search import stop_decisions

    try:
        decisions = stop_decisions(load_spec_file(args.filename), load_history(args.history))
    except SearchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps([{"index": d.index, **d.to_status().to_wire()} for d in decisions], indent=2))
    return 0
