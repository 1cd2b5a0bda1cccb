"""The example TuningJobs in examples/, for unit and e2e tests alike (tests/ is on the import path through its
conftest). A file holds one TuningJob, after any objects it needs created with it (the headless Service of a
multi-node indexed-Job example), so that `kubectl apply -f <file>` runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
NAMESPACE_FILE = EXAMPLES_DIR / "namespace.yaml"  # the restricted namespace the examples run in


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def tuningjob(path: Path) -> dict[str, Any]:
    """The file's TuningJob manifest."""
    [job] = [d for d in documents(path) if d["kind"] == "TuningJob"]
    return job


def companions(path: Path) -> list[dict[str, Any]]:
    """The other objects in the file, to create before its TuningJob."""
    return [d for d in documents(path) if d["kind"] != "TuningJob"]


def example_files() -> list[Path]:
    """Every example that holds a TuningJob."""
    return sorted(p for p in EXAMPLES_DIR.glob("*.yaml") if p != NAMESPACE_FILE)
