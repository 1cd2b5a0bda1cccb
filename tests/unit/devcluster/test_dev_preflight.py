"""`kubetune dev up` refuses to start, with a fix in the message, on a busy port or missing binary."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune_dev import preflight
from kubetune_dev.layout import REQUIRED_BINARIES


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_busy_port_is_reported_with_its_owner_and_the_flag_to_change(busy_port: int) -> None:
    problems = preflight.check_ports({"apiserver": busy_port})
    assert len(problems) == 1
    text = str(problems[0])
    assert f"port {busy_port}" in text and "in use" in text
    assert f"pid {os.getpid()}" in text  # who holds it
    assert "--apiserver-port" in text


def test_free_port_passes() -> None:
    (port,) = preflight.free_ports(1)
    assert preflight.check_ports({"prometheus": port}) == []


def test_free_ports_are_distinct_and_skip_excluded() -> None:
    ports = preflight.free_ports(7, exclude={1})
    assert len(set(ports)) == 7 and 1 not in ports


def test_missing_binaries_point_at_the_build_script(tmp_path: Path) -> None:
    problems = preflight.check_binaries(tmp_path)
    assert [p.what.split()[0] for p in problems] == list(REQUIRED_BINARIES)
    assert all("hack/build-binaries.sh" in p.fix for p in problems)


def test_present_binaries_pass(tmp_path: Path) -> None:
    for name in REQUIRED_BINARIES:
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    assert preflight.check_binaries(tmp_path) == []


def test_cli_up_fails_fast_and_explains_everything(tmp_path: Path, busy_port: int) -> None:
    env = dict(os.environ, KUBETUNE_DEV_BIN_DIR=str(tmp_path / "no-binaries"), KUBETUNE_DEV_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "dev", "up", "--apiserver-port", str(busy_port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result
    assert "hack/build-binaries.sh" in result.stderr
    assert f"port {busy_port}" in result.stderr and "--apiserver-port" in result.stderr
    assert not (tmp_path / "home").exists()  # nothing was started or written
