"""Pure translation of a pod spec into what the node agent runs: environment, argv, resources.

Follows the kubelet's rules where they matter to workloads: `$(VAR)` expansion in env values,
command and args; fieldRef/resourceFieldRef/configMapKeyRef/secretKeyRef env sources; envFrom;
lookup of the executable on the container's own PATH. No I/O: ConfigMaps and Secrets are read
through the `lookup` callable the caller passes in.
"""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
MAX_TERMINATION_MESSAGE_BYTES = 4096  # the kubelet's limit
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048

JSON = dict[str, Any]
# (kind "ConfigMap"|"Secret", namespace, name) -> decoded data, or None when it does not exist.
Lookup = Callable[[str, str, str], Mapping[str, str] | None]


class ContainerConfigError(Exception):
    """The container cannot be configured yet (missing ConfigMap key, ...): retried, like the kubelet."""


class UnsupportedSpecError(Exception):
    """The pod uses something the dev agent cannot do: the pod fails with this message."""


def expand(template: str, mapping: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: unknown references stay verbatim, `$$` escapes `$`."""
    out: list[str] = []
    i = 0
    while i < len(template):
        char = template[i]
        if char != "$" or i + 1 >= len(template):
            out.append(char)
            i += 1
            continue
        nxt = template[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = template.find(")", i + 2)
            if end < 0:
                out.append("$(")
                i += 2
            else:
                name = template[i + 2 : end]
                out.append(mapping.get(name, f"$({name})"))
                i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: str | int | float) -> Decimal:
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"invalid quantity {value!r}")
    return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]


def container_resource(container: JSON, resource: str) -> Decimal | None:
    """The container's limit for `resource`, else its request (extended resources need both equal)."""
    resources = container.get("resources") or {}
    for kind in ("limits", "requests"):
        value = (resources.get(kind) or {}).get(resource)
        if value is not None:
            return parse_quantity(value)
    return None


def gpu_count(container: JSON) -> int:
    value = container_resource(container, GPU_RESOURCE)
    return int(value) if value is not None else 0


def gpu_env(indices: list[int]) -> dict[str, str]:
    """What the NVIDIA device plugin hands a container; an empty list hides every GPU."""
    visible = ",".join(str(i) for i in indices)
    return {"CUDA_VISIBLE_DEVICES": visible, "NVIDIA_VISIBLE_DEVICES": visible or "void"}


def _selector_key(path: str, prefix: str) -> str | None:
    match = re.fullmatch(re.escape(prefix) + r"\[['\"](.+)['\"]\]", path)
    return match.group(1) if match else None


def field_ref_value(pod: JSON, field_path: str, *, pod_ip: str, host_ip: str) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
    }
    if field_path in simple:
        return str(simple[field_path])
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        key = _selector_key(field_path, prefix)
        if key is not None:
            return str((meta.get(source) or {}).get(key, ""))
        if field_path == prefix:
            items = sorted((meta.get(source) or {}).items())
            return "\n".join(f'{k}="{v}"' for k, v in items)
    raise UnsupportedSpecError(f"fieldRef {field_path!r} is not supported by the dev agent")


def resource_field_value(pod: JSON, container: JSON, ref: JSON) -> str:
    target = container
    if ref.get("containerName"):
        named = [c for c in (pod.get("spec") or {}).get("containers", []) if c.get("name") == ref["containerName"]]
        if not named:
            raise ContainerConfigError(f"resourceFieldRef: no container named {ref['containerName']!r}")
        target = named[0]
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    value = parse_quantity((((target.get("resources") or {}).get(kind) or {}).get(name)) or 0)
    divisor = parse_quantity(ref.get("divisor") or 1)
    if value == 0 and kind == "limits":
        # The kubelet falls back to node allocatable for unset limits; report "unlimited" as 0.
        return "0"
    return str(math.ceil(value / divisor))


def _decode_secret(data: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}


def secret_data(obj: JSON) -> dict[str, str]:
    return _decode_secret(obj.get("data") or {}) | dict(obj.get("stringData") or {})


def build_env(
    pod: JSON,
    container: JSON,
    *,
    base_env: Mapping[str, str],
    pod_ip: str,
    host_ip: str,
    lookup: Lookup,
    device_env: Mapping[str, str],
) -> dict[str, str]:
    """The container's environment: base (PATH, service vars), envFrom, env, then device env."""
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = dict(base_env)

    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(key)
            if not ref:
                continue
            data = lookup(kind, namespace, ref.get("name", ""))
            if data is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
            for k, v in data.items():
                env[prefix + k] = v

    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var or var.get("valueFrom") is None:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_ref_value(pod, source["fieldRef"]["fieldPath"], pod_ip=pod_ip, host_ip=host_ip)
        elif "resourceFieldRef" in source:
            env[name] = resource_field_value(pod, container, source["resourceFieldRef"])
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            kind, ref = (
                ("ConfigMap", source["configMapKeyRef"])
                if "configMapKeyRef" in source
                else ("Secret", source["secretKeyRef"])
            )
            data = lookup(kind, namespace, ref.get("name", ""))
            if data is None or ref.get("key") not in data:
                if ref.get("optional"):
                    continue
                what = f'{kind.lower()} "{ref.get("name")}"'
                raise ContainerConfigError(
                    f"{what} not found" if data is None else f"couldn't find key {ref.get('key')} in {what}"
                )
            env[name] = data[ref["key"]]
        else:
            raise UnsupportedSpecError(f"env {name}: unsupported valueFrom {sorted(source)}")

    env.update(device_env)
    return env


def build_argv(container: JSON, env: Mapping[str, str]) -> list[str]:
    """command + args, `$(VAR)`-expanded. Images are ignored, so a command is required."""
    command = [expand(str(c), env) for c in container.get("command") or []]
    args = [expand(str(a), env) for a in container.get("args") or []]
    if not command:
        raise UnsupportedSpecError(
            f"container {container.get('name')!r} has no command; the dev agent ignores images "
            "(and their entrypoints), so set `command`"
        )
    return command + args


def resolve_executable(name: str, path_env: str, working_dir: str) -> str | None:
    """Where the runtime would find `name`: relative to the working dir if it has a slash, else PATH."""
    if "/" in name:
        candidate = name if name.startswith("/") else os.path.join(working_dir, name)
        return candidate if _is_executable(candidate) else None
    for directory in path_env.split(":"):
        candidate = os.path.join(directory or ".", name)
        if _is_executable(candidate):
            return candidate
    return None


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def termination_message_path(container: JSON) -> str:
    return str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH)


def termination_message(*, file_content: bytes, log_tail: bytes, policy: str, exit_code: int) -> str:
    """The kubelet's rule: the file wins; FallbackToLogsOnError uses the log tail on failure."""
    message = file_content[:MAX_TERMINATION_MESSAGE_BYTES].decode(errors="replace")
    if not message and policy == "FallbackToLogsOnError" and exit_code != 0:
        lines = log_tail.splitlines()[-FALLBACK_LOG_LINES:]
        message = b"\n".join(lines)[-FALLBACK_LOG_BYTES:].decode(errors="replace")
    return message


def mount_target_is_safe(path: str) -> bool:
    """Mount paths must be absolute and must not hide the host's root or system directories."""
    pure = PurePosixPath(path)
    return pure.is_absolute() and ".." not in pure.parts and str(pure) not in {"/", "/proc", "/sys", "/dev"}
