"""The package's layers, checked statically over every import (lazy ones included): see layering.py.

api imports nothing of ours; search only api; controller only api and search; and none of the three
reaches kopf, kubernetes or aiohttp, by any chain of our modules. Kubernetes and Prometheus I/O live in
k8s/ and metrics/, the Kopf wiring in handlers/.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

from layering import check

OPERATOR = Path(__file__).resolve().parents[2] / "operator"
LAYERS = {
    "kubetune.api": set(),
    "kubetune.search": {"kubetune.api"},
    "kubetune.controller": {"kubetune.api", "kubetune.search"},
}
BANNED = {"kopf", "kubernetes", "aiohttp"}


def test_the_pure_core_keeps_its_layers() -> None:
    problems = check(OPERATOR, "kubetune", LAYERS, BANNED)
    assert problems == [], "\n".join(problems)


def plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text))
    return root


def test_the_checker_finds_violations_planted_in_a_tiny_tree(tmp_path: Path) -> None:
    root = plant(tmp_path, {
        "kubetune/__init__.py": "",
        "kubetune/api/__init__.py": "",
        "kubetune/api/models.py": """
            import math

            def later():
                from kubetune.search import engine  # lazy: still a dependency
            """,
        "kubetune/search/__init__.py": "from . import engine\n",
        "kubetune/search/engine.py": """
            from kubetune.api import models
            from ..controller import planner  # relative, upwards

            def wired():
                import importlib
                return importlib.import_module("kopf")
            """,
        "kubetune/controller/__init__.py": "",
        "kubetune/controller/planner.py": """
            from typing import TYPE_CHECKING

            from kubetune import search
            from kubetune.api.models import math

            if TYPE_CHECKING:
                from kubetune.handlers import runtime
            """,
        "kubetune/controller/clean.py": "from kubetune.api import models\n",
        "kubetune/handlers/__init__.py": "",
        "kubetune/handlers/runtime.py": "import aiohttp\nimport kopf\n",
    })
    problems = check(root, "kubetune", LAYERS, BANNED)
    layer_problems = sorted(p.split(": ", 1)[1] for p in problems if "may import" in p)
    assert layer_problems == [
        "kubetune.api.models imports kubetune.search.engine (kubetune.api may import nothing else of the package)",
        "kubetune.controller.planner imports kubetune.handlers.runtime "
        "(kubetune.controller may import kubetune.api, kubetune.search)",
        "kubetune.search.engine imports kubetune.controller.planner (kubetune.search may import kubetune.api)",
    ]
    reaching = {
        p.split(": ", 1)[1].split(" reaches ")[0]: p.split(" reaches ")[1] for p in problems if " reaches " in p
    }
    # Even the module with no violation of its own reaches kopf: api's models lazily import search, whose
    # engine imports kopf. The empty package inits reach nothing.
    assert set(reaching) == {
        "kubetune.api.models", "kubetune.search", "kubetune.search.engine",
        "kubetune.controller.planner", "kubetune.controller.clean",
    }
    assert reaching["kubetune.controller.clean"].startswith(
        "kubetune.controller.clean -> kubetune.api.models -> kubetune.search.engine -> kopf"
    )
    assert reaching["kubetune.search.engine"].startswith("kubetune.search.engine -> kopf (")
    assert reaching["kubetune.api.models"].startswith("kubetune.api.models -> kubetune.search.engine -> kopf")


def test_the_checker_follows_a_package_init_to_a_banned_import(tmp_path: Path) -> None:
    # Importing kubetune.api.models runs kubetune/__init__.py: what that imports counts too.
    root = plant(tmp_path, {
        "kubetune/__init__.py": "from kubetune.wiring import start\n",
        "kubetune/wiring.py": "def start():\n    import kubernetes.client\n",
        "kubetune/api/__init__.py": "",
        "kubetune/api/models.py": "import math\n",
    })
    problems = check(root, "kubetune", LAYERS, BANNED)
    assert any(
        "kubetune.api.models reaches kubetune.api.models -> kubetune -> kubetune.wiring -> kubernetes.client" in p
        for p in problems
    ), problems
    clean = plant(tmp_path, {"kubetune/wiring.py": "def start():\n    import json\n"})
    assert check(clean, "kubetune", LAYERS, BANNED) == []
