"""Security properties of what the operator builds: restricted trial pods, no API token, inert user strings.

The e2e tests prove the same against a real API server (tests/e2e/test_pod_security.py); these pin the
builders without a cluster, with hostile values.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from example_manifests import EXAMPLES_DIR, example_files, tuningjob

from kubetune.api import TuningJob
from kubetune.controller.templates import build_trial_pod, substitute, trial_pods
from kubetune.metrics.prometheus import build_curve_query, build_final_query, render_template
from kubetune_dev.podspec import expand

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = example_files()

HOSTILE = [
    "; rm -rf / #",
    "$(id)",
    "`reboot`",
    "a && b || c | d > /etc/passwd",
    "${params.other}",
    "${HOME}",
    "'\"\\",
    "line\nbreak\r\ttab",
    "\u202eevil\u200b名前🚀",
    'x"} or vector(1) #',
    '"}[5m]) or up{a="',
    "\\\"} or up",
    ".*",
    "",
    # Kubernetes expands $(VAR) in command, args and env values; `$$` is its escape.
    "$(KUBETUNE_JOB)",
    "$$(HOME)",
    "$(",
    "trailing$",
    "$$",
    "$",
]


def job_from(manifest: dict[str, Any], **spec_changes: Any) -> TuningJob:
    body = {**manifest, "metadata": {"name": "sec", "namespace": "ml", "uid": "uid-sec", "generation": 1}}
    body["spec"] = {**manifest["spec"], **spec_changes}
    return TuningJob.model_validate(body)


def example_job(path: Path, **spec_changes: Any) -> TuningJob:
    return job_from(tuningjob(path), **spec_changes)


def first_values(job: TuningJob) -> dict[str, Any]:
    return {p.name: (p.values[0] if p.values else p.min) for p in job.spec.parameters}


def trial_pod(job: TuningJob, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    return build_trial_pod(job, "sec-0", 1, first_values(job) if parameters is None else parameters, "uid-trial")


def example_pods(path: Path) -> list[dict[str, Any]]:
    """The pods a trial of the example makes: its pod, or one per pod template of its workload."""
    job = example_job(path)
    return trial_pods(job, "sec-0", 1, first_values(job))


# --------------------------------------------------------------------------- Pod Security `restricted`

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                   "secret"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The checks of the Pod Security Standards' `restricted` profile (v1.34) that a pod spec can fail."""
    spec = pod["spec"]
    pod_ctx = spec.get("securityContext") or {}
    found = [f"spec.{k}" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    containers = spec["containers"] + (spec.get("initContainers") or [])
    for c in containers:
        ctx = c.get("securityContext") or {}
        where = f"container {c['name']}"
        if ctx.get("privileged"):
            found.append(f"{where}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation != false")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"{where}: capabilities.drop lacks ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{where}: capabilities.add {caps['add']}")
        if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
            found.append(f"{where}: runAsNonRoot not true")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            found.append(f"{where}: runAsUser 0")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: seccompProfile {seccomp}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            found.append(f"{where}: hostPort")
    return found


def test_the_checker_catches_a_plain_pod() -> None:
    pod = {"spec": {"containers": [{"name": "c", "securityContext": {"privileged": True}}],
                    "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}
    problems = restricted_violations(pod)
    assert any("privileged" in p for p in problems) and any("hostPath" in p for p in problems)
    assert any("seccompProfile" in p for p in problems) and any("runAsNonRoot" in p for p in problems)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_trial_pods_of_every_example_pass_restricted(path: Path) -> None:
    pods = example_pods(path)
    assert pods and [restricted_violations(pod) for pod in pods] == [[] for _ in pods]


def test_a_template_that_sets_part_of_a_security_context_keeps_the_other_defaults() -> None:
    manifest = tuningjob(EXAMPLES[0])
    spec = manifest["spec"]["trialTemplate"]["template"]["spec"]
    spec["securityContext"] = {"runAsUser": 1000, "fsGroup": 2000}
    spec["containers"][0]["securityContext"] = {"readOnlyRootFilesystem": True}
    spec["initContainers"] = [{"name": "fetch", "image": "busybox", "command": ["true"]}]
    pod = trial_pod(job_from(manifest))
    assert restricted_violations(pod) == []
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000 and pod["spec"]["securityContext"]["fsGroup"] == 2000
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_an_explicit_choice_in_the_template_wins_over_the_defaults() -> None:
    """The operator does not silently 'fix' a template; the namespace's admission decides (see SECURITY.md)."""
    manifest = tuningjob(EXAMPLES[0])
    spec = manifest["spec"]["trialTemplate"]["template"]["spec"]
    spec["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": True}
    pod = trial_pod(job_from(manifest))
    assert pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is True
    name = spec["containers"][0]["name"]
    assert restricted_violations(pod) == [f"container {name}: allowPrivilegeEscalation != false"]


# --------------------------------------------------------------------------- service-account token


def test_trial_pods_get_no_service_account_token_by_default() -> None:
    for path in EXAMPLES:
        assert [p["spec"]["automountServiceAccountToken"] for p in example_pods(path)] == [False], path.name


def test_a_template_may_ask_for_the_token_explicitly() -> None:
    manifest = tuningjob(EXAMPLES[0])
    manifest["spec"]["trialTemplate"]["template"]["spec"]["automountServiceAccountToken"] = True
    assert trial_pod(job_from(manifest))["spec"]["automountServiceAccountToken"] is True


# --------------------------------------------------------------------------- no shell


def received(text: str, env: dict[str, str] | None = None) -> str:
    """What the container gets for a command, args or env entry: the kubelet's `$(VAR)` expansion (the dev
    node agent implements Kubernetes' own rules; the real-node e2e tests check the kubelet agrees)."""
    return expand(text, env if env is not None else {"KUBETUNE_JOB": "sec", "HOME": "/root"})


@pytest.mark.parametrize("value", HOSTILE)
def test_substitution_is_literal_and_never_recursive(value: str) -> None:
    parameters = {"x": value, "other": "SHOULD-NOT-APPEAR"}
    assert received(substitute("--flag=${params.x}", parameters)) == f"--flag={value}"
    assert received(substitute("${params.x}${params.x}", parameters)) == value + value
    assert "SHOULD-NOT-APPEAR" not in substitute("${params.x}", parameters)


def test_the_templates_own_references_keep_their_kubernetes_meaning() -> None:
    assert received(substitute("$(KUBETUNE_JOB)/${params.x}", {"x": "$(HOME)"})) == "sec/$(HOME)"


def test_hostile_values_stay_one_argv_entry_each_and_the_command_is_untouched() -> None:
    manifest = tuningjob(EXAMPLES_DIR / "digits-random.yaml")
    container = manifest["spec"]["trialTemplate"]["template"]["spec"]["containers"][0]
    container["args"] = ["--a=${params.x}", "${params.x}"]
    container["env"] = [{"name": "X", "value": "v=${params.x}"}]
    job = job_from(manifest, parameters=[{"name": "x", "type": "categorical", "values": HOSTILE}])
    for value in HOSTILE:
        built = trial_pod(job, {"x": value})["spec"]["containers"][0]
        assert built["command"] == container["command"]
        assert [received(a) for a in built["args"]] == [f"--a={value}", value]
        env = {e["name"]: received(e["value"]) for e in built["env"] if "value" in e}
        assert env["X"] == f"v={value}" and env["KUBETUNE_PARAM_X"] == value
        assert json.loads(env["KUBETUNE_PARAMS"]) == {"x": value}


OPERATOR_PACKAGES = ("api", "controller", "handlers", "k8s", "metrics", "search")


def test_operator_code_never_spawns_processes() -> None:
    """Nothing the operator runs can hand a user string to a shell: it imports no process API at all."""
    banned_modules = {"subprocess", "pty", "shlex"}
    banned_calls = {"system", "popen", "execv", "execve", "execvp", "spawnv", "spawnl", "eval", "exec"}
    found = []
    for package in OPERATOR_PACKAGES:
        for path in (REPO / "operator" / "kubetune" / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found += [f"{path.name}: import {a.name}" for a in node.names if a.name in banned_modules]
                elif isinstance(node, ast.ImportFrom) and node.module in banned_modules:
                    found.append(f"{path.name}: from {node.module}")
                elif isinstance(node, ast.Call):
                    name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                    if name in banned_calls:
                        found.append(f"{path.name}:{node.lineno}: {name}()")
    assert found == []


# --------------------------------------------------------------------------- PromQL

# A PromQL double-quoted string: anything but a quote, backslash or newline, or an escape.
_LITERAL = re.compile(r'"((?:[^"\\\n]|\\.)*)"')


def _unquote(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), body)


def split_literals(query: str) -> tuple[str, list[str]]:
    """(the query with every string literal replaced by "", the literals' decoded contents).

    A name that broke out of its literal would change the skeleton or leave a stray quote in it.
    """
    literals: list[str] = []

    def keep(match: re.Match[str]) -> str:
        literals.append(_unquote(match[1]))
        return '""'

    skeleton = _LITERAL.sub(keep, query)
    assert "\\" not in skeleton, query
    return skeleton, literals


@pytest.mark.parametrize("value", HOSTILE)
def test_curve_and_final_queries_keep_every_name_inside_its_literal(value: str) -> None:
    benign_curve = split_literals(build_curve_query("ns", "job", ["t-0", "t-1"], "m"))[0]
    benign_final = split_literals(build_final_query("ns", "job", ["t-0", "t-1"]))[0]
    skeleton, literals = split_literals(build_curve_query(value, value, [value, "t-1"], value))
    assert skeleton == benign_curve
    namespace, job, trials, metric = literals
    assert namespace == job == metric == value
    # The trial matcher is a regex of literal alternatives: it matches the names and nothing else.
    assert re.fullmatch(trials, value, re.DOTALL) and re.fullmatch(trials, "t-1")
    assert not re.fullmatch(trials, value + "x", re.DOTALL) and not re.fullmatch(trials, "t-10")
    skeleton, literals = split_literals(build_final_query(value, value, [value]))
    assert skeleton == benign_final and literals[:2] == [value, value]


@pytest.mark.parametrize("value", HOSTILE)
def test_promql_template_placeholders_are_filled_with_escaped_values(value: str) -> None:
    template = 'max by (step) (my_metric{ns="{{namespace}}", job="{{ job }}", trial="{{trial}}", name="{{metric}}"})'
    benign = split_literals(render_template(template, "ns", "job", "trial", "metric"))[0]
    skeleton, literals = split_literals(render_template(template, value, value, value, value))
    assert skeleton == benign and literals == [value] * 4
