"""What the operator's distribution ships: the wheel built from this tree holds no dev-cluster code."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_kubetune_wheel_holds_no_dev_cluster(tmp_path: Path) -> None:
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' scratch: stale files would be packed again
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("kubetune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "kubetune/handlers/main.py" in names and "kubetune/k8s/core.py" in names
    leaks = [n for n in names if n.startswith(("kubetune_dev/", "kubetune/dev/", "devcluster/"))]
    assert leaks == []
