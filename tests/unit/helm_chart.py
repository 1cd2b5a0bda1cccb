"""Rendering the Helm chart with the pinned helm binary (no cluster): shared by the chart tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kubetune"
CACHE = Path(os.environ.get("KUBETUNE_CACHE") or Path.home() / ".cache" / "kubetune")
HELM = CACHE / "current" / "helm"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))

# The operator's documented least privileges (helm/kubetune/README.md, "RBAC"): it lists and
# watches, never GETs; writes status only through the status subresource; creates trials and
# pods, deletes pods; records Events.
OPERATOR_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["kubetune.io"], "resources": ["tuningjobs"], "verbs": ["list", "watch"]},
    {"apiGroups": ["kubetune.io"], "resources": ["tuningjobs/status"], "verbs": ["patch"]},
    {"apiGroups": ["kubetune.io"], "resources": ["trials"], "verbs": ["list", "watch", "create"]},
    {"apiGroups": ["kubetune.io"], "resources": ["trials/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
]


def workload_rule(group: str, resource: str) -> dict[str, Any]:
    """The rule of one kind of the chart's workloadKinds: a trial's attempt is one of them, as it is a pod."""
    return {"apiGroups": [group], "resources": [resource], "verbs": ["get", "list", "watch", "create", "delete"]}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.skip(f"helm is not built at {HELM}: run `make binaries` (hack/build-binaries.sh)")
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/kubetune-helm/cache", "HELM_CONFIG_HOME": "/tmp/kubetune-helm/config",
           "HELM_DATA_HOME": "/tmp/kubetune-helm/data"}
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=env, timeout=120, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result


def render_text(*args: str, release: str = "kt", namespace: str = "kubetune") -> str:
    return helm("template", release, str(CHART), "--namespace", namespace, *args).stdout


def render(*args: str, release: str = "kt", namespace: str = "kubetune") -> list[dict[str, Any]]:
    """`helm template` output as a list of manifests (hooks included)."""
    return [d for d in yaml.safe_load_all(render_text(*args, release=release, namespace=namespace)) if d]


def render_error(*args: str) -> str:
    """The error text of a `helm template` that must fail."""
    result = helm("template", "kt", str(CHART), *args, check=False)
    assert result.returncode != 0, f"helm template {' '.join(args)} should have failed"
    return result.stderr


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m.get("kind") == kind]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------- the README's values table

TABLE_BEGIN = (
    "<!-- values-table:begin (generated from values.yaml by `python tests/unit/helm_chart.py`; do not edit) -->"
)
TABLE_END = "<!-- values-table:end -->"
README = CHART / "README.md"


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    text = json.dumps(value)
    return "see values.yaml" if len(text) > 40 else f"`{text}`"


def values_table() -> str:
    """Markdown table of every `# --` documented value: key, type (from the schema), default, meaning."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    values = yaml.safe_load("\n".join(lines))
    schema = json.loads((CHART / "values.schema.json").read_text())
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and comment:
            comment.append(stripped[1:].strip())
            continue
        match = re.match(r"^( *)([A-Za-z_][A-Za-z0-9_]*):", line)
        if not match:
            comment = []
            continue
        indent, key = len(match[1]), match[2]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if comment:
            path = [k for _, k in stack]
            value: Any = values
            node: dict[str, Any] = schema
            for part in path:
                value, node = value[part], node["properties"][part]
            rows.append(f"| `{'.'.join(path)}` | {node.get('type', '')} | {_cell(value)} | {' '.join(comment)} |")
            comment = []
    return "\n".join(rows)


def readme_with_table(readme: str) -> str:
    begin, end = readme.index(TABLE_BEGIN), readme.index(TABLE_END)
    return readme[: begin + len(TABLE_BEGIN)] + "\n" + values_table() + "\n" + readme[end:]


if __name__ == "__main__":
    README.write_text(readme_with_table(README.read_text()))
    print(f"wrote the values table of {README}")
