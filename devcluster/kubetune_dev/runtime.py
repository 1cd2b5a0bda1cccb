"""Starting one container of a pod as a host process.

Every container runs under a tiny shell wrapper inside its own session (so signals reach the
whole process group) and, when we may, its own mount namespace (`unshare --mount`): there the
wrapper bind-mounts the per-pod termination-message file and volumes at the paths the pod asked
for, invisible to the host. The wrapper writes the exit code to a file, so an agent that
restarted (and is no longer the parent) still learns how its pods ended.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubetune_dev.procs import start_in_session

# $1 = exit file, $2 = start-error file (both in the pod directory, the wrapper's working directory),
# $3 = the container's working directory ("": the pod directory), then "src dst ro|rw" triples, then
# "--", then argv. The wrapper uses the two files and the mount sources inside the pod directory by
# relative path (`mount --no-canonicalize`): they stay reachable through its working directory even
# when a volume is mounted over a parent of the pod directory (an emptyDir at /tmp, with the cluster
# home under /tmp). `trap :` (not `trap ''`) so the workload still gets default signal handling, while
# the wrapper survives SIGTERM to the group long enough to record the workload's exit status.
WRAPPER = r"""
exit_file=${1##*/}; error_file=${2##*/}; workdir=$3; shift 3
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  if ! mount --no-canonicalize --bind "$1" "$2" 2>"$error_file"; then
    echo "kubetune-dev: cannot bind-mount $1 at $2: $(cat "$error_file")" >"$error_file"
    echo 128 >"$exit_file"; exit 128
  fi
  if [ "$3" = ro ] && ! mount --no-canonicalize -o remount,bind,ro "$2" 2>"$error_file"; then
    echo "kubetune-dev: cannot make $2 read-only: $(cat "$error_file")" >"$error_file"
    echo 128 >"$exit_file"; exit 128
  fi
  shift 3
done
shift
rm -f "$error_file"
trap : TERM INT HUP QUIT
if [ -n "$workdir" ]; then (cd "$workdir" && exec "$@"); else "$@"; fi
rc=$?
echo "$rc" >"$exit_file.tmp" && mv -f "$exit_file.tmp" "$exit_file"
exit "$rc"
"""


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


@functools.cache
def can_unshare() -> bool:
    """True where we may create mount namespaces (root, or enough capabilities)."""
    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("mount") is None:
        return False
    try:
        result = subprocess.run(
            [unshare, "--mount", "--propagation", "private", "true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def prepare_target(mount: Mount) -> None:
    """The bind-mount target must exist on the host: an empty directory or file is created there."""
    target = Path(mount.target)
    if Path(mount.source).is_dir():
        target.mkdir(parents=True, exist_ok=True)
    elif not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()


def launch(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    exit_file: Path,
    error_file: Path,
    mounts: Sequence[Mount],
    use_namespace: bool,
) -> subprocess.Popen[bytes]:
    for path in (exit_file, error_file, exit_file.with_name(exit_file.name + ".tmp")):
        path.unlink(missing_ok=True)
    pod_dir = exit_file.parent
    if error_file.parent != pod_dir:
        raise ValueError("the exit and start-error files must share the pod directory")
    prefix: list[str] = []
    mount_args: list[str] = []
    if use_namespace:
        for mount in mounts:
            prepare_target(mount)
            source = Path(mount.source)
            # Inside the pod directory: relative to the wrapper's working directory (see WRAPPER).
            relative = f"./{source.relative_to(pod_dir)}" if source.is_relative_to(pod_dir) else mount.source
            mount_args += [relative, mount.target, "ro" if mount.read_only else "rw"]
        prefix = [shutil.which("unshare") or "unshare", "--mount", "--propagation", "private", "--"]
    workdir = "" if Path(cwd) == pod_dir else str(cwd)
    cmd = [*prefix, "/bin/sh", "-c", WRAPPER, "kubetune-pod", str(exit_file), str(error_file), workdir, *mount_args,
           "--"]
    return start_in_session([*cmd, *argv], log_file=log_path, env=env, cwd=pod_dir)


def read_exit_code(exit_file: Path) -> int | None:
    try:
        return int(exit_file.read_text().strip())
    except (OSError, ValueError):
        return None


def tail(path: Path, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            return handle.read()
    except OSError:
        return b""


def find_wrapper(exit_file: Path) -> int | None:
    """The pid of the live wrapper whose command line names `exit_file` (unique per container)."""
    needle = str(exit_file).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:
            continue
    return None
