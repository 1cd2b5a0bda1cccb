"""How the node agent turns a pod spec into a process: env, argv, resources, messages."""

from __future__ import annotations

import base64
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kubetune_dev import podspec


def pod(**container: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u-1",
            "labels": {"kubetune.io/trial": "t-7"},
            "annotations": {"a": "b"},
        },
        "spec": {"nodeName": "node", "serviceAccountName": "sa", "containers": [{"name": "main", **container}]},
    }


def env_of(p: dict[str, Any], lookup: podspec.Lookup = lambda *_: None, **kwargs: Any) -> dict[str, str]:
    return podspec.build_env(
        p,
        p["spec"]["containers"][0],
        base_env={"PATH": "/venv/bin:/usr/bin"},
        pod_ip="127.10.0.9",
        host_ip="127.0.0.1",
        lookup=lookup,
        device_env=kwargs.get("device_env", {}),
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$(A)-$(B)", "1-$(B)"),
        ("$$(A)", "$(A)"),
        ("$(A", "$(A"),
        ("a$b", "a$b"),
        ("tail$", "tail$"),
    ],
)
def test_expand_follows_kubernetes_rules(template: str, expected: str) -> None:
    assert podspec.expand(template, {"A": "1"}) == expected


def test_env_resolves_values_field_refs_and_expansion() -> None:
    p = pod(
        env=[
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "TRIAL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['kubetune.io/trial']"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "URL", "value": "http://$(IP):8000"},
        ]
    )
    env = env_of(p)
    assert env["IP"] == "127.10.0.9"
    assert env["TRIAL"] == "t-7"
    assert env["UID"] == "u-1"
    assert env["NODE"] == "node"
    assert env["URL"] == "http://127.10.0.9:8000"
    assert env["PATH"] == "/venv/bin:/usr/bin"


def test_device_env_wins_over_the_spec() -> None:
    p = pod(env=[{"name": "CUDA_VISIBLE_DEVICES", "value": "7"}])
    assert env_of(p, device_env=podspec.gpu_env([1, 3]))["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert podspec.gpu_env([]) == {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"}


def test_config_map_and_secret_refs() -> None:
    data = {
        ("ConfigMap", "ns", "cm"): {"k": "v"},
        ("Secret", "ns", "s"): podspec.secret_data({"data": {"pw": base64.b64encode(b"hunter2").decode()}}),
    }
    p = pod(
        env=[
            {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "x", "optional": True}}},
        ],
        envFrom=[{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
    )
    env = env_of(p, lambda kind, ns, name: data.get((kind, ns, name)))
    assert (env["K"], env["PW"], env["CM_k"]) == ("v", "hunter2", "v")
    assert "OPT" not in env


def test_missing_config_map_is_retryable_config_error() -> None:
    p = pod(env=[{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}])
    with pytest.raises(podspec.ContainerConfigError, match='configmap "cm" not found'):
        env_of(p)


def test_argv_needs_a_command_because_images_are_ignored() -> None:
    assert podspec.build_argv({"command": ["python", "-c"], "args": ["print($(X))"]}, {"X": "1"}) == [
        "python",
        "-c",
        "print(1)",
    ]
    with pytest.raises(podspec.UnsupportedSpecError, match="ignores images"):
        podspec.build_argv({"name": "main", "args": ["x"]}, {})


def test_resolve_executable_uses_the_container_path(tmp_path: Path) -> None:
    tool = tmp_path / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert podspec.resolve_executable("tool", f"/nonexistent:{tool.parent}", "/") == str(tool)
    assert podspec.resolve_executable("bin/tool", "", str(tmp_path)) == str(tmp_path / "bin" / "tool")
    assert podspec.resolve_executable("tool", "/nonexistent", "/") is None


def test_quantities_and_gpu_counts() -> None:
    assert podspec.parse_quantity("500m") == Decimal("0.5")
    assert podspec.parse_quantity("1Gi") == 2**30
    assert podspec.gpu_count({"resources": {"limits": {"nvidia.com/gpu": "2"}}}) == 2
    assert podspec.gpu_count({}) == 0
    with pytest.raises(ValueError):
        podspec.parse_quantity("1 cup")


def test_termination_message_file_wins_and_logs_are_the_fallback_on_error() -> None:
    msg = podspec.termination_message
    assert msg(file_content=b"done", log_tail=b"x", policy="FallbackToLogsOnError", exit_code=1) == "done"
    assert msg(file_content=b"", log_tail=b"a\nboom", policy="FallbackToLogsOnError", exit_code=1) == "a\nboom"
    assert msg(file_content=b"", log_tail=b"boom", policy="FallbackToLogsOnError", exit_code=0) == ""
    assert msg(file_content=b"", log_tail=b"boom", policy="File", exit_code=1) == ""
    assert len(msg(file_content=b"x" * 10000, log_tail=b"", policy="File", exit_code=0)) == 4096


def test_mount_targets_may_not_cover_system_directories() -> None:
    assert podspec.mount_target_is_safe("/var/run/secrets/kubernetes.io/serviceaccount")
    for bad in ("/", "/proc", "relative", "/a/../etc"):
        assert not podspec.mount_target_is_safe(bad)
