"""The decision core (api, controller, search) never imports Kubernetes or Kopf."""

from __future__ import annotations

import subprocess
import sys


def test_core_modules_import_no_kubernetes_client_or_kopf() -> None:
    code = (
        "import sys\n"
        "import kubetune.api, kubetune.api.crd, kubetune.controller.planner, kubetune.controller.engine\n"
        "import kubetune.search\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes', 'aiohttp'))\n"
        "print(','.join(bad))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert output == "", f"pure core imported {output}"
