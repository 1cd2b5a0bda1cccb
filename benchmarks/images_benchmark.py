"""What kubetune's images contain and cost to build (results: IMAGES.md).

    python benchmarks/images_benchmark.py [--cold]

For each image of the last `make images` (~/.cache/kubetune/images/images.json): the uncompressed
size (podman), the compressed size and layer count (the manifest in the local registry), the
largest layers, and whether the operator image holds dev-cluster code, the trainer or torch. Then
the build time of `make images`: warm (inputs unchanged: nothing is rebuilt), and with --cold the
project's images and local bases removed first (the wheelhouse and the pip cache are kept, as
they are after `make venv` on a fresh machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from kubetune_dev import images

REPO = Path(__file__).resolve().parents[1]
MANIFEST_TYPES = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def podman(*args: str) -> str:
    return subprocess.run([*images.PODMAN, *args], check=True, capture_output=True, text=True).stdout


def manifest(address: str, repository: str, digest: str) -> dict[str, object]:
    request = urllib.request.Request(f"http://{address}/v2/{repository}/manifests/{digest}",
                                     headers={"Accept": MANIFEST_TYPES})
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, object] = json.load(response)
        return result


def mib(size: float) -> str:
    return f"{size / 2**20:,.0f} MiB"


def build_seconds(args: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(["bash", str(REPO / "hack" / "build-images.sh"), *args], check=True, capture_output=True)
    return time.monotonic() - started


def remove_local_images() -> None:
    tags = podman("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    ours = [t for t in tags if t.startswith(("localhost/kubetune/", "localhost/kubetune-base/"))]
    if ours:
        subprocess.run([*images.PODMAN, "rmi", "--force", *ours], check=True, capture_output=True)
    subprocess.run([*images.PODMAN, "image", "prune", "--force"], check=True, capture_output=True)
    images.STATE_FILE.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also time a build without local images or bases")
    args = parser.parse_args()
    print(f"`python benchmarks/images_benchmark.py{' --cold' if args.cold else ''}` - "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}\n")
    times: dict[str, float] = {}
    if args.cold:
        remove_local_images()
        times["cold (no local images or bases; wheelhouse kept)"] = build_seconds([])
    times["warm (inputs unchanged)"] = min(build_seconds([]) for _ in range(3))
    state = images.load_state()
    print("| image | uncompressed | compressed (zstd/gzip layers) | layers | largest layer |")
    print("| --- | --- | --- | --- | --- |")
    with images.registry() as address:
        for name in ("operator", "trainer"):
            image = state[name]
            reference = f"localhost/{image['repository']}:build-{image['key'][:16]}"
            size = int(json.loads(podman("image", "inspect", reference))[0]["Size"])
            described = manifest(address, image["repository"], image["digest"])["layers"]
            layers = [int(layer["size"]) for layer in described]  # type: ignore[attr-defined]
            print(f"| {name} `{image['digest'][:19]}…` | {mib(size)} | {mib(sum(layers))} | {len(layers)} "
                  f"| {mib(max(layers))} |")
    operator = f"localhost/kubetune/operator:build-{state['operator']['key'][:16]}"
    probe = ("import importlib.util as u; "
             "print([m for m in ('kubetune_dev', 'kubetune_trainer', 'torch') if u.find_spec(m)])")
    found = subprocess.run([*images.PODMAN, "run", "--rm", *images.ULIMITS, "--network", "none", "--entrypoint",
                            "python", operator, "-c", probe], check=True, capture_output=True, text=True).stdout
    print(f"\noperator image holds of kubetune_dev, kubetune_trainer, torch: {found.strip()}\n")
    print("| `make images` | seconds |")
    print("| --- | --- |")
    for label, seconds in times.items():
        print(f"| {label} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
