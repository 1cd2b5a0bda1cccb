"""`make images`: kubetune's two images built from their Dockerfiles, offline, and pushed to the local registry.

Public base registries cannot be reached here, so the bases are made locally and handed to the
Dockerfiles through their base ARGs (the Dockerfiles keep their public defaults for `docker build`
anywhere else):
- python base: `debootstrap` bookworm (python3, venv) imported into podman;
- PyTorch base: the python base with torch in /opt/venv, from a wheelhouse;
- wheelhouse (~/.cache/kubetune/wheels): `pip download` on the host (Debian bookworm, CPython 3.11:
  the images' own platform), mounted read-only into each build; the pip cache that `make venv`
  filled means torch is not downloaded a second time.

Every step is keyed by the hash of what goes into it (debootstrap arguments, Dockerfile, build
context files, base image id, requirements), so a second run with the same inputs rebuilds nothing
and pushes nothing. Builds use podman with runc (crun cannot run in this machine's hybrid cgroups),
`--network=none`, and the wheelhouse as the only package source.

The result, ~/.cache/kubetune/images/images.json, names each image by repository and digest in the
local registry (docker-registry, storage ~/.cache/kubetune/registry: the dev cluster's `registry`
component serves the same storage).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubetune_dev.registry import REGISTRY_BINARY, default_storage, manifest_stored, registry_config, wait_for_registry

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("KUBETUNE_CACHE") or Path.home() / ".cache" / "kubetune")
WHEELS = CACHE / "wheels"
IMAGES_DIR = CACHE / "images"
STATE_FILE = IMAGES_DIR / "images.json"
REGISTRY_STORAGE = default_storage()
TAG = "0.1.0"

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP = ("--variant=minbase", "--include=python3,python3-venv,python-is-python3,ca-certificates", "bookworm")
PODMAN = ("podman", "--runtime", "/usr/sbin/runc")
# At or below this machine's hard limits (podman's defaults are refused without CAP_SYS_RESOURCE).
ULIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
BUILD_TOOLS = ("setuptools>=69", "wheel")


@dataclass(frozen=True)
class ImageSpec:
    name: str  # operator | trainer
    dockerfile: Path
    base_arg: str  # the Dockerfile's base-image ARG
    context_paths: tuple[str, ...]  # what the Dockerfile copies (its .dockerignore allows these only)

    @property
    def repository(self) -> str:
        return f"kubetune/{self.name}"

    @property
    def ignorefile(self) -> Path:
        return self.dockerfile.with_name(self.dockerfile.name + ".dockerignore")


OPERATOR = ImageSpec(
    "operator", REPO / "Dockerfile", "PYTHON_IMAGE", ("pyproject.toml", "README.md", "operator/kubetune"),
)
TRAINER = ImageSpec(
    "trainer", REPO / "trainer-image" / "Dockerfile", "BASE_IMAGE",
    ("pyproject.toml", "README.md", "operator/kubetune", "trainer-image/pyproject.toml",
     "trainer-image/kubetune_trainer"),
)
SPECS = (OPERATOR, TRAINER)


def log(message: str) -> None:
    print(f"[images {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(*command: str, stdin: bytes | None = None, capture: bool = False) -> str:
    log("$ " + " ".join(command))
    done = subprocess.run(command, input=stdin, check=True, stdout=subprocess.PIPE if capture else None)
    return done.stdout.decode().strip() if capture else ""


def digest_of(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()


def files_digest(paths: Iterable[Path]) -> str:
    """Content hash of files and directory trees (bytecode caches left out, as the .dockerignores do)."""
    h = hashlib.sha256()
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def image_exists(reference: str) -> bool:
    return subprocess.run([*PODMAN, "image", "exists", reference]).returncode == 0


def image_id(reference: str) -> str:
    return run(*PODMAN, "image", "inspect", "--format", "{{.Id}}", reference, capture=True)


# --------------------------------------------------------------------------- requirements


def project_requirements(pyproject: Path, *extras: str) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = [r for r in project.get("dependencies", []) if not r.startswith("kubetune")]
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return requirements


def operator_requirements() -> list[str]:
    return project_requirements(REPO / "pyproject.toml", "operator")


def trainer_requirements() -> list[str]:
    """What pip adds to the PyTorch base for the trainer (torch is there already)."""
    trainer = project_requirements(REPO / "trainer-image" / "pyproject.toml")
    return project_requirements(REPO / "pyproject.toml") + [r for r in trainer if not r.startswith("torch")]


def torch_requirement() -> str:
    """The torch the Python environment holds: pip's cache has it, so it is not downloaded again."""
    return f"torch=={importlib.metadata.version('torch')}"


def fetch_wheels(requirements: Sequence[str]) -> None:
    """Into the shared wheelhouse, once per requirement set (pip skips files it already has)."""
    stamp = WHEELS / f".fetched-{digest_of(*sorted(requirements))[:16]}"
    if stamp.exists():
        return
    WHEELS.mkdir(parents=True, exist_ok=True)
    run(sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
        "--dest", str(WHEELS), "--find-links", str(WHEELS), *requirements, *BUILD_TOOLS)
    stamp.write_text("\n".join(requirements) + "\n")


# --------------------------------------------------------------------------- bases


def python_base() -> str:
    tag = f"localhost/kubetune-base/python:3.11-bookworm-{digest_of(*DEBOOTSTRAP, DEBIAN_MIRROR)[:12]}"
    if image_exists(tag):
        return tag
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kubetune-rootfs-", dir=IMAGES_DIR) as work:
        rootfs = Path(work) / "rootfs"
        run("debootstrap", *DEBOOTSTRAP, str(rootfs), DEBIAN_MIRROR)
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        archive = subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], check=True,
                                 stdout=subprocess.PIPE).stdout
        run(*PODMAN, "import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', "-", tag, stdin=archive)
    return tag


def pytorch_base(python_image: str) -> str:
    containerfile = REPO / "hack" / "images" / "pytorch-base.Containerfile"
    requirement = torch_requirement()
    fetch_wheels([requirement])
    key = digest_of(containerfile.read_bytes(), image_id(python_image), requirement)[:12]
    tag = f"localhost/kubetune-base/pytorch:{requirement.split('==')[1]}-{key}"
    if not image_exists(tag):
        with tempfile.TemporaryDirectory(prefix="kubetune-empty-context-", dir=IMAGES_DIR) as context:
            build(containerfile, tag, context, {"PYTHON_IMAGE": python_image, "TORCH_REQUIREMENT": requirement})
    return tag


def build(dockerfile: Path, tag: str, context: str | Path, build_args: dict[str, str],
          ignorefile: Path | None = None) -> None:
    command = [*PODMAN, "build", "--pull=never", "--network=none", "--layers", *ULIMITS, "--file", str(dockerfile),
               "--tag", tag, "--volume", f"{WHEELS}:/wheelhouse:ro"]
    if ignorefile is not None:
        command += ["--ignorefile", str(ignorefile)]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    run(*command, str(context))


# --------------------------------------------------------------------------- images and the registry


@contextlib.contextmanager
def registry(storage: Path = REGISTRY_STORAGE) -> Iterator[str]:
    """A docker-registry on loopback for the duration, serving `storage`; yields host:port."""
    from kubetune_dev.preflight import free_ports  # lazily: preflight imports the cluster modules

    storage.mkdir(parents=True, exist_ok=True)
    port = free_ports(1)[0]
    with tempfile.TemporaryDirectory(prefix="kubetune-registry-") as work:
        config = Path(work) / "config.yml"
        config.write_text(registry_config(storage, port))
        with open(Path(work) / "registry.log", "wb") as log_file:
            process = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=subprocess.DEVNULL,
                                       stderr=log_file)
            address = f"127.0.0.1:{port}"
            try:
                wait_for_registry(address)
                yield address
            finally:
                process.terminate()
                process.wait(timeout=30)


def image_key(spec: ImageSpec, base: str, requirements: Sequence[str]) -> str:
    return digest_of(
        spec.dockerfile.read_bytes(), spec.ignorefile.read_bytes(),
        files_digest(REPO / p for p in spec.context_paths), image_id(base), *requirements,
    )


def build_image(spec: ImageSpec, base: str, requirements: Sequence[str], known: dict[str, dict[str, str]],
                registry_address: str) -> dict[str, str]:
    """Build (unless an image of the same key exists) and push (unless the registry has it)."""
    fetch_wheels(requirements)
    key = image_key(spec, base, requirements)
    previous = known.get(spec.name) or {}
    if previous.get("key") == key and manifest_stored(spec.repository, previous.get("digest", ""), REGISTRY_STORAGE):
        log(f"{spec.name}: up to date ({previous['digest']})")
        return previous
    local = f"localhost/{spec.repository}:build-{key[:16]}"
    started = time.monotonic()
    if not image_exists(local):
        build(spec.dockerfile, local, REPO, {spec.base_arg: base, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wheelhouse"},
              spec.ignorefile)
    built = time.monotonic() - started
    with tempfile.TemporaryDirectory(prefix="kubetune-digest-") as work:
        digest_file = Path(work) / "digest"
        run(*PODMAN, "push", "--quiet", "--tls-verify=false", "--digestfile", str(digest_file), local,
            f"docker://{registry_address}/{spec.repository}:{TAG}")
        digest = digest_file.read_text().strip()
    return {"name": spec.name, "repository": spec.repository, "tag": TAG, "digest": digest, "key": key,
            "image_id": image_id(local), "build_seconds": f"{built:.0f}"}


def load_state() -> dict[str, dict[str, str]]:
    if not STATE_FILE.exists():
        return {}
    images: dict[str, dict[str, str]] = json.loads(STATE_FILE.read_text()).get("images", {})
    return images


def reference(name: str, registry_address: str) -> str | None:
    """`<registry>/kubetune/<name>@sha256:...` of the last build, or None if there is none."""
    image = load_state().get(name)
    if not image:
        return None
    return f"{registry_address}/{image['repository']}@{image['digest']}"


def build_all(names: Sequence[str]) -> dict[str, dict[str, str]]:
    known = load_state()
    python_image = python_base()
    results = dict(known)
    needs = {"operator": lambda: (python_image, operator_requirements()),
             "trainer": lambda: (pytorch_base(python_image), trainer_requirements())}
    with registry() as address:
        for spec in SPECS:
            if spec.name in names:
                base, requirements = needs[spec.name]()
                results[spec.name] = build_image(spec, base, requirements, known, address)
                STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
                STATE_FILE.write_text(json.dumps({"images": results}, indent=2) + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="build kubetune's images and push them to the local registry")
    known = [s.name for s in SPECS]
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"{' and '.join(known)} (default: both)")
    args = parser.parse_args(argv)
    args.names = args.names or known
    if unknown := set(args.names) - set(known):
        parser.error(f"unknown image {', '.join(sorted(unknown))}: choose from {', '.join(known)}")
    if shutil.which(PODMAN[0]) is None or not Path(REGISTRY_BINARY).exists():
        print("make images needs podman and docker-registry: run hack/install-system-deps.sh", file=sys.stderr)
        return 2
    started = time.monotonic()
    results = build_all(args.names)
    for name in args.names:
        image = results[name]
        print(f"{image['repository']}@{image['digest']}")
    log(f"done in {time.monotonic() - started:.0f}s ({STATE_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
