"""The operator starts without the heavy numeric libraries: each sampler imports its own when first used.

scipy alone is about 40 MiB of resident memory; a registry that imports every sampler's module must
not pull it (or optuna, torch, scikit-learn, matplotlib) in at start.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("scipy", "optuna", "torch", "sklearn", "matplotlib", "cmaes")


def test_the_operator_starts_without_heavy_libraries() -> None:
    probe = (
        "import json, sys\n"
        "import kubetune.handlers.main, kubetune.search\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert json.loads(out) == []
