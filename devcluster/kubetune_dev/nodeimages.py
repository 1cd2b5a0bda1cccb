"""The real node's infrastructure images, made from static binaries as OCI image archives.

The pod sandbox (`pause`), CoreDNS and a small test image (busybox) are one-layer images of static
binaries: no base image, no registry and no build tool is needed, and the archive is identical
for identical inputs (sorted entries, zero timestamps, root-owned), so its digest only changes when
a binary does. `ctr images import` loads an archive into the node's containerd. The project's own
images (operator, trainer) come from the image pipeline and the local registry, not from here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
# Image names live under a domain nobody resolves, so nothing is ever pulled for them.
IMAGE_DOMAIN = "kubetune.local"
NONROOT_UID = 65532  # the "nonroot" user of distroless images
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Entry:
    """One file of the image: a copy of `source`, `content`, a symlink to `link`, or (none) a directory."""

    path: str
    source: Path | None = None
    link: str | None = None
    mode: int = 0o755
    content: bytes | None = None


@dataclass(frozen=True)
class ImageSpec:
    name: str  # full reference, e.g. kubetune.local/pause:src-0123
    entries: tuple[Entry, ...]
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    user: str = ""
    env: tuple[str, ...] = (f"PATH={DEFAULT_PATH}",)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def build_layer(entries: Sequence[Entry]) -> bytes:
    """An uncompressed tar of the entries (and their parent directories), byte-for-byte reproducible."""
    members: dict[str, Entry] = {}
    for entry in entries:
        for parent in _parents(entry.path):
            members.setdefault(parent, Entry(parent))
        members[entry.path.strip("/")] = entry
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            entry = members[name]
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = entry.mode
            if entry.link is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
                info.mode = 0o777
                tar.addfile(info)
            elif entry.content is not None or entry.source is not None:
                data = entry.content if entry.content is not None else Path(str(entry.source)).read_bytes()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
    return buffer.getvalue()


def build_config(spec: ImageSpec, diff_id: str) -> dict[str, Any]:
    config: dict[str, Any] = {"Env": list(spec.env), "WorkingDir": "/"}
    if spec.entrypoint:
        config["Entrypoint"] = list(spec.entrypoint)
    if spec.cmd:
        config["Cmd"] = list(spec.cmd)
    if spec.user:
        config["User"] = spec.user
    if spec.labels:
        config["Labels"] = dict(spec.labels)
    return {
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "kubetune_dev.nodeimages"}],
    }


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def build_archive(spec: ImageSpec) -> tuple[bytes, str]:
    """(OCI image-layout tar, manifest digest) for `spec`."""
    layer = build_layer(spec.entries)
    # mtime 0 and no file name: the compressed bytes depend on the content only.
    layer_gz = gzip.compress(layer, compresslevel=6, mtime=0)
    config = _json(build_config(spec, _digest(layer)))
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": _digest(layer_gz), "size": len(layer_gz)}],
        }
    )
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": MANIFEST_MEDIA_TYPE,
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    # containerd's importer names the image after this annotation.
                    "annotations": {
                        "io.containerd.image.name": spec.name,
                        "org.opencontainers.image.ref.name": spec.tag,
                    },
                }
            ],
        }
    )
    files = {
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
        "index.json": index,
        **{f"blobs/sha256/{_digest(blob)[7:]}": blob for blob in (layer_gz, config, manifest)},
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), _digest(manifest)


def write_archive(spec: ImageSpec, directory: Path) -> Path:
    """Write the archive under `directory`, named after the image; kept when the content is unchanged."""
    data, _ = build_archive(spec)
    path = directory / f"{spec.name.replace('/', '_').replace(':', '_')}.tar"
    if not (path.exists() and path.read_bytes() == data):
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def _version_of(binary: Path) -> str:
    """A tag that changes with the binary: the version directory it was built into, or its hash."""
    resolved = binary.resolve()
    parent = resolved.parent.name
    prefix = f"{resolved.name}-"
    if parent.startswith(prefix):
        return parent[len(prefix) :]
    return hashlib.sha256(resolved.read_bytes()).hexdigest()[:12]


def pause_image(bin_dir: Path) -> ImageSpec:
    pause = bin_dir / "pause"
    return ImageSpec(
        name=f"{IMAGE_DOMAIN}/pause:{_version_of(pause)}",
        entries=(Entry("/pause", source=pause),),
        entrypoint=("/pause",),
        user=str(NONROOT_UID),
    )


def coredns_image(bin_dir: Path) -> ImageSpec:
    coredns = bin_dir / "coredns"
    return ImageSpec(
        name=f"{IMAGE_DOMAIN}/coredns:{_version_of(coredns)}",
        entries=(Entry("/coredns", source=coredns), Entry("/etc/coredns")),
        entrypoint=("/coredns",),
        user=str(NONROOT_UID),
    )


def busybox_applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True, text=True).stdout
    return sorted(line for line in out.split() if line)


# Users and groups for `id` and anything else that looks them up; a static glibc binary can only use
# its built-in `files` source, so nsswitch.conf names it.
BASE_FILES: tuple[Entry, ...] = (
    Entry(
        "/etc/passwd",
        content=f"root:x:0:0:root:/root:/bin/sh\nnonroot:x:{NONROOT_UID}:{NONROOT_UID}::/tmp:/bin/sh\n".encode(),
        mode=0o644,
    ),
    Entry("/etc/group", content=f"root:x:0:\nnonroot:x:{NONROOT_UID}:\n".encode(), mode=0o644),
    Entry("/etc/nsswitch.conf", content=b"passwd: files\ngroup: files\n", mode=0o644),
)


def busybox_image(busybox: Path, *, user: str = "") -> ImageSpec:
    """A shell and the usual tools from Debian's static busybox (package busybox-static): the test
    image for pods on the real node. `user` sets the image's USER (empty: root, as most images)."""
    applets = busybox_applets(busybox)
    digest = hashlib.sha256(busybox.read_bytes() + b"".join(e.content or b"" for e in BASE_FILES)).hexdigest()[:12]
    suffix = "-nonroot" if user else ""
    return ImageSpec(
        name=f"{IMAGE_DOMAIN}/busybox:{digest}{suffix}",
        entries=(
            Entry("/bin/busybox", source=busybox),
            *(Entry(f"/{applet}", link="/bin/busybox") for applet in applets if applet != "bin/busybox"),
            Entry("/tmp", mode=0o1777),
            *BASE_FILES,
        ),
        cmd=("sh",),
        user=user,
    )


def import_archive(ctr: Path, address: Path, archive: Path, namespace: str = "k8s.io") -> None:
    """Load an archive into containerd (the CRI plugin's namespace is `k8s.io`)."""
    proc = subprocess.run(
        [str(ctr), f"--address={address}", f"--namespace={namespace}", "images", "import", str(archive)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ctr images import {archive.name} failed: {proc.stderr.strip() or proc.stdout.strip()}")
