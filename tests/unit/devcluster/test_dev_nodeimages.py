"""The real node's infrastructure images: reproducible one-layer OCI archives of static files."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from kubetune_dev.nodeimages import Entry, ImageSpec, build_archive, build_layer, write_archive


def spec(tmp_path: Path, payload: bytes = b"#!/bin/true\n") -> ImageSpec:
    binary = tmp_path / "tool"
    binary.write_bytes(payload)
    return ImageSpec(
        name="kubetune.local/tool:v1",
        entries=(
            Entry("/usr/bin/tool", source=binary),
            Entry("/bin/alias", link="/usr/bin/tool"),
            Entry("/etc/motd", content=b"hello\n", mode=0o644),
            Entry("/tmp", mode=0o1777),
        ),
        entrypoint=("/usr/bin/tool",),
        user="65532",
    )


def members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def blob(files: dict[str, bytes], digest: str) -> bytes:
    return files[f"blobs/sha256/{digest.split(':')[1]}"]


def test_same_inputs_give_the_same_bytes_and_digest(tmp_path: Path) -> None:
    first, digest = build_archive(spec(tmp_path))
    second, again = build_archive(spec(tmp_path))
    assert first == second and digest == again
    _, other = build_archive(spec(tmp_path, payload=b"#!/bin/false\n"))
    assert other != digest


def test_archive_is_an_oci_layout_that_names_the_image_and_links_its_blobs(tmp_path: Path) -> None:
    archive, digest = build_archive(spec(tmp_path))
    files = members(archive)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["digest"] == digest
    assert entry["annotations"]["io.containerd.image.name"] == "kubetune.local/tool:v1"
    manifest_bytes = blob(files, digest)
    assert "sha256:" + hashlib.sha256(manifest_bytes).hexdigest() == digest
    manifest = json.loads(manifest_bytes)
    config = json.loads(blob(files, manifest["config"]["digest"]))
    assert config["config"]["Entrypoint"] == ["/usr/bin/tool"] and config["config"]["User"] == "65532"
    layer = gzip.decompress(blob(files, manifest["layers"][0]["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]


def test_layer_holds_files_links_and_their_parent_directories_root_owned_at_time_zero(tmp_path: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(build_layer(spec(tmp_path).entries))) as tar:
        by_name = {m.name: m for m in tar.getmembers()}
    assert list(by_name) == sorted(by_name)
    assert {"usr", "usr/bin", "usr/bin/tool", "bin", "bin/alias", "etc", "etc/motd", "tmp"} == set(by_name)
    assert by_name["bin/alias"].issym() and by_name["bin/alias"].linkname == "/usr/bin/tool"
    assert by_name["usr/bin/tool"].mode == 0o755 and by_name["etc/motd"].mode == 0o644
    assert by_name["tmp"].isdir() and by_name["tmp"].mode == 0o1777
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in by_name.values())


def test_write_archive_keeps_an_unchanged_file(tmp_path: Path) -> None:
    path = write_archive(spec(tmp_path), tmp_path / "out")
    stamp = path.stat().st_mtime_ns
    assert write_archive(spec(tmp_path), tmp_path / "out") == path
    assert path.stat().st_mtime_ns == stamp
    assert path.name == "kubetune.local_tool_v1.tar"
