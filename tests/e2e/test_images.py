"""The images a user pulls: both pulled by digest from the dev cluster's registry and run as built.

`make images` (part of `make setup`) built them from the Dockerfiles and pushed them to the local
registry's storage; the dev cluster's `registry` component serves that storage. Marker `images`.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from kubetune_dev import images
from kubetune_dev.cluster import ClusterInfo

pytestmark = [pytest.mark.e2e, pytest.mark.images]

PODMAN = [*images.PODMAN]
RUN = [*PODMAN, "run", "--rm", *images.ULIMITS, "--network", "none", "--read-only"]


def pulled(cluster: ClusterInfo, name: str) -> str:
    reference = images.reference(name, cluster.registry)
    assert reference is not None, f"no {name} image: run `make images`"
    subprocess.run([*PODMAN, "pull", "--quiet", "--tls-verify=false", reference], check=True, capture_output=True)
    return reference


def config(reference: str) -> dict[str, object]:
    out = subprocess.run([*PODMAN, "image", "inspect", reference], check=True, capture_output=True, text=True).stdout
    (image,) = json.loads(out)
    return dict(image["Config"])


def output(*command: str) -> str:
    """stdout and stderr of a command that must succeed."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


def test_the_operator_image_runs_non_root_and_read_only_without_dev_or_trainer_code(dev_cluster: ClusterInfo) -> None:
    image = pulled(dev_cluster, "operator")
    settings = config(image)
    assert settings["User"] == "65532:65532" and settings["Entrypoint"] == ["kubetune"]
    assert "operator" in output(*RUN, image, "--help")
    probe = ("import importlib.util as u, os; print(os.getuid(), "
             "[m for m in ('kubetune_dev', 'kubetune_trainer', 'torch') if u.find_spec(m)])")
    assert output(*RUN, "--entrypoint", "python", image, "-c", probe).split() == ["65532", "[]"]
    output(*RUN, "--entrypoint", "python", image, "-c", "import kubetune.handlers.main, kopf, optuna")


def test_the_trainer_image_trains_with_the_slim_reporting_package(dev_cluster: ClusterInfo) -> None:
    image = pulled(dev_cluster, "trainer")
    settings = config(image)
    assert settings["User"] == "10001:10001"
    assert "--lr" in output(*RUN, image, "--help")
    probe = ("import importlib.util as u, kubetune.report, kubetune_trainer; "
             "print([m for m in ('kopf', 'kubernetes', 'optuna', 'aiohttp', 'pydantic') if u.find_spec(m)])")
    assert output(*RUN, "--entrypoint", "python", image, "-c", probe).strip() == "[]"  # none of the operator's stack
    trained = output(*RUN, "--tmpfs", "/tmp", image, "--epochs", "1", "--metrics-port", "0")
    assert "val_accuracy" in trained
