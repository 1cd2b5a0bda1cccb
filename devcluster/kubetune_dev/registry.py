"""The local OCI registry: Debian's docker-registry (the CNCF distribution server) on loopback.

`make images` pushes kubetune's images into its storage (kubetune_dev/images.py); every dev cluster
runs a `registry` component serving the same storage, so images built once are pulled by digest
from any cluster, and a cluster's registry holds nothing of its own to clean up.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

REGISTRY_BINARY = "/usr/bin/docker-registry"
# Where released images live (ghcr.io/kubetune/operator, ghcr.io/kubetune/trainer); the real node's
# containerd treats the local registry as its mirror.
PUBLIC_REGISTRY = "ghcr.io"


def default_storage() -> Path:
    cache = Path(os.environ.get("KUBETUNE_CACHE") or Path.home() / ".cache" / "kubetune")
    return cache / "registry"


def registry_config(storage: Path, port: int) -> str:
    """docker-registry's configuration (YAML; JSON is YAML): filesystem storage, plain HTTP on loopback."""
    return json.dumps({
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    })


def registry_ready(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as response:
            return 200 <= int(response.status) < 300
    except OSError:
        return False


def wait_for_registry(address: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not registry_ready(address):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the registry at {address} did not answer")
        time.sleep(0.2)


def manifest_stored(repository: str, digest: str, storage: Path) -> bool:
    """Whether the registry's storage holds the manifest `digest` of `repository`."""
    algorithm, _, hexdigest = digest.partition(":")
    if not hexdigest:
        return False
    return (storage / "docker/registry/v2/repositories" / repository / "_manifests/revisions" / algorithm
            / hexdigest / "link").exists()
