"""The `kubetune` command line: one entry point, one module per command group.

Each command group lives in its own module and exposes
`register(subparsers) -> None`, adding its parser with `set_defaults(run=...)`;
`run(args) -> int` returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

# Modules that register command groups; imported lazily so `kubetune crds`
# never pays for kopf or torch.
COMMAND_MODULES: tuple[str, ...] = (
    "kubetune.api.cli",
    "kubetune.search.cli",
    "kubetune.handlers.main",
    "kubetune.plot",
)
# `kubetune dev` comes from the separate `kubetune-dev` distribution (devcluster/), which
# developers install and the operator image does not carry.
OPTIONAL_COMMAND_MODULES: tuple[str, ...] = ("kubetune_dev.cli",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetune", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    missing: set[str] = set()
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # The slim `kubetune` (a training image's reporting API) lacks the operator's dependencies.
            if error.name is None or error.name.startswith("kubetune"):
                raise
            missing.add(error.name.partition(".")[0])
            continue
        module.register(subparsers)
    if missing:
        parser.epilog = (f"Commands that need {', '.join(sorted(missing))} are not installed: "
                         "pip install 'kubetune[operator]'.")
    for module_name in OPTIONAL_COMMAND_MODULES:
        if importlib.util.find_spec(module_name.partition(".")[0]) is not None:
            importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
