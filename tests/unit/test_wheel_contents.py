"""What each distribution ships, read from wheels built from this tree.

- `kubetune`: the package alone (no dev cluster, no trainer), and prometheus-client as its only
  dependency outside extras, so a training image gets the reporting API without the operator's stack;
- `kubetune-trainer`: the reference trainer, depending on the slim `kubetune`.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(project: Path, out: Path) -> zipfile.ZipFile:
    shutil.rmtree(project / "build", ignore_errors=True)  # setuptools' scratch: stale files would be packed again
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
         str(project)],
        check=True,
    )
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def requirements(wheel: zipfile.ZipFile) -> tuple[list[str], list[str]]:
    """(plain requirements, requirements behind an extra) from the wheel's METADATA."""
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = email.parser.Parser().parsestr(wheel.read(metadata).decode()).get_all("Requires-Dist") or []
    return [r for r in requires if "extra ==" not in r], [r for r in requires if "extra ==" in r]


@pytest.mark.slow
def test_the_kubetune_wheel_is_the_package_and_the_reporting_api(tmp_path: Path) -> None:
    wheel = build_wheel(ROOT, tmp_path)
    names = wheel.namelist()
    assert "kubetune/handlers/main.py" in names and "kubetune/report.py" in names
    leaks = [n for n in names if n.startswith(("kubetune_dev/", "kubetune/dev/", "devcluster/", "kubetune_trainer/"))]
    assert leaks == []
    plain, extras = requirements(wheel)
    assert [r.split(">")[0] for r in plain] == ["prometheus-client"]
    assert any(r.startswith("kopf") and 'extra == "operator"' in r for r in extras)


@pytest.mark.slow
def test_the_trainer_wheel_depends_on_the_slim_kubetune(tmp_path: Path) -> None:
    wheel = build_wheel(ROOT / "trainer-image", tmp_path)
    names = wheel.namelist()
    assert "kubetune_trainer/training.py" in names
    assert not [n for n in names if n.startswith("kubetune/")]
    plain, _ = requirements(wheel)
    assert {r.split(">")[0].split("=")[0] for r in plain} >= {"kubetune", "torch", "scikit-learn"}
