"""Generated and adversarial TuningJob specs against the real API server with the operator running.

Every spec must end one of three ways:

- rejected at admission (4xx, never 5xx) with a message that names the field (or 413: too large);
- accepted, then marked `Valid=False` (reason InvalidSpec) by the operator, when the operator's own model
  or checks refuse it (the oracle is the same pydantic model and `validate_job`);
- accepted and run: trials and their pods appear; small valid jobs run to completion, their fast trial
  command checking that every ${params.x} reached argv as inert text.

Meanwhile the operator never crashes, never raises in a reconcile and does not hot-loop: once every job
has settled, its reconcile counter (from its own /metrics) stays flat.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubetune_harness import (
    Cluster,
    OperatorProcess,
    condition,
    fresh_namespace,
    install_crds,
    operator_samples,
    script_trial_template,
    wait_for,
)
from pydantic import ValidationError

from kubetune.api import TuningJob
from kubetune.controller.planner import validate_job
from kubetune_dev.cluster import ClusterInfo
from kubetune_dev.preflight import free_ports

pytestmark = pytest.mark.e2e

EXAMPLES = 50
SETTLE_TIMEOUT = 240.0
QUIET_SECONDS = 5.0

# The trial: python -c TRIAL_SCRIPT <name> ${params.<name>} ... checks that each placeholder reached argv
# exactly as the operator spells the value (no shell, no expansion), then reports the metric and exits 0.
TRIAL_SCRIPT = """
import json, os, sys
params = json.loads(os.environ["KUBETUNE_PARAMS"])
args = sys.argv[1:]
spell = lambda v: repr(v) if isinstance(v, float) else str(v)
for name, got in zip(args[0::2], args[1::2]):
    want = spell(params[name]) if name in params else ""
    if got != want:
        print("argv mismatch", name, repr(got), repr(want)); sys.exit(3)
report = {"status": "completed", "metrics": {os.environ["METRIC"]: 0.5}}
open(os.environ["KUBETUNE_TERMINATION_MESSAGE_PATH"], "w").write(json.dumps(report))
"""

# Text a user might type, and text an attacker would: shell, PromQL, templates, unicode, control characters.
HOSTILE_TEXT = [
    "; rm -rf / #", "$(id)", "`reboot`", "a && b | c > /etc/passwd", "${params.other}", "${HOME}", "'\"\\",
    "line\nbreak\ttab", "\u202eevil\u200b名前🚀", 'x"} or vector(1) #', '"}[5m]) or up{a="', "{{job}}", "%s%n",
    "-rf", "--help", "*", "..", "",
]
text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=40).filter(lambda s: "\x00" not in s))
identifier = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
metric_name = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,20}", fullmatch=True)
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


# --------------------------------------------------------------------------- valid specs


def placeholder(name: str) -> str:
    return "${params." + name + "}"


@st.composite
def parameter(draw: st.DrawFn, name: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["float", "int", "categorical", "discrete"]))
    if kind == "float":
        low = draw(finite)
        high = draw(st.floats(min_value=low, max_value=low + 1e6, exclude_min=True, allow_nan=False))
        if low > 0 and draw(st.booleans()):
            return {"name": name, "type": kind, "min": low, "max": high, "log": True}
        return {"name": name, "type": kind, "min": low, "max": high}
    if kind == "int":
        low = draw(st.integers(-1000, 1000))
        return {"name": name, "type": kind, "min": low, "max": low + draw(st.integers(1, 1000))}
    if kind == "categorical":
        return {"name": name, "type": kind, "values": draw(st.lists(text, min_size=1, max_size=6, unique=True))}
    values = sorted(draw(st.lists(finite, min_size=1, max_size=6, unique=True)))
    return {"name": name, "type": kind, "values": values}


def make_spec(parameters: list[dict[str, Any]], metric: str, goal: str, algorithm: str, max_trials: int,
              parallelism: int) -> dict[str, Any]:
    """A valid spec whose trial checks its argv and reports `metric` at once."""
    names = [p["name"] for p in parameters]
    return {
        "objective": {"metric": metric, "goal": goal},
        "parameters": parameters,
        "algorithm": {"name": algorithm, "seed": 1},
        "budget": {"maxTrials": max_trials, "parallelism": parallelism},
        "trialTemplate": script_trial_template(
            TRIAL_SCRIPT,
            args=[a for n in names for a in (n, placeholder(n))],
            env=[{"name": "METRIC", "value": metric}],
        ),
    }


@st.composite
def valid_spec(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(identifier, min_size=1, max_size=4, unique=True))
    max_trials = draw(st.integers(1, 3))
    spec = make_spec(
        [draw(parameter(n)) for n in names], draw(metric_name), draw(st.sampled_from(["minimize", "maximize"])),
        draw(st.sampled_from(["auto", "random", "grid", "tpe", "evolution"])), max_trials,
        draw(st.integers(1, max_trials)),
    )
    if draw(st.booleans()):
        # The user's own PromQL, hostile or not: at worst a MetricsAvailable=False condition.
        spec["objective"]["promql"] = draw(st.sampled_from(PROMQL))
    if draw(st.booleans()):  # several objectives: the reported metric against what the trial's pod costs
        spec["objectives"] = [spec.pop("objective"), draw(st.sampled_from([WALL, {**WALL, "goal": "maximize"}]))]
        spec["algorithm"]["name"] = draw(st.sampled_from(["auto", "nsga2", "motpe", "parego", "random"]))
    return spec


# The spec every table entry is applied to.
BASE_SPEC = make_spec(
    [{"name": "x", "type": "categorical", "values": HOSTILE_TEXT}, {"name": "y", "type": "float", "min": 0, "max": 1}],
    "score", "maximize", "random", 2, 2,
)


PROMQL = [
    'kubetune_trial_metric{kubetune_io_trial="{{trial}}",metric="{{metric}}"}',
    '{__name__=~".+"} or vector(1)',
    'up{job="{{job}}"}) or on() vector(1) #',
    "sum(rate(oops[5m]) by",
    '{{namespace}}"} or vector(1) {a="',
]


# --------------------------------------------------------------------------- mutations


def at(spec: dict[str, Any], path: str) -> tuple[Any, str]:
    """The parent of a dotted path (list indices as numbers) and the last key."""
    *parents, last = path.split(".")
    node: Any = spec
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node, last


def put(spec: dict[str, Any], path: str, value: Any) -> None:
    parent, last = at(spec, path)
    if isinstance(parent, list):
        parent[int(last)] = value
    else:
        parent[last] = value


CONTAINER = "trialTemplate.template.spec.containers.0"

def _categorical(name: str, values: list[str], when: tuple[str, list[str]] | None = None) -> dict[str, Any]:
    parameter: dict[str, Any] = {"name": name, "type": "categorical", "values": values}
    if when is not None:
        parameter["when"] = {"parameter": when[0], "values": when[1]}
    return parameter


CONDITION_SHAPES = [
    [_categorical("a", ["x", "y"], ("b", ["x"])), _categorical("b", ["x", "y"], ("a", ["y"]))],  # cycle
    [_categorical("a", ["x"], ("a", ["x"]))],  # itself
    [_categorical("a", ["x"]), _categorical("b", ["y"], ("a", ["nope"]))],  # unknown parent value
    [{"name": "a", "type": "int", "min": 0, "max": 3}, _categorical("b", ["y"], ("a", ["1"]))],  # numeric parent
    [_categorical("a", ["x", "y"]), {"name": "b", "type": "float", "min": 0, "max": 1, "when": {
        "parameter": "a", "values": ["x"]}}],  # valid
    [{"name": "a", "type": "categorical", "values": [1, 2]}],  # numbers as categorical values
    [{"name": "a", "type": "discrete", "values": [3, 1, 2]}],  # unordered
    [{"name": "a", "type": "discrete", "values": ["x", {"y": 1}, None]}],  # not numbers
    [{"name": "a", "type": "categorical", "values": ["x", "x"]}],  # duplicates
]


def _budget(spec: dict[str, Any], budget: dict[str, Any]) -> None:
    spec["budget"] = dict(budget)


def _wrong_type(spec: dict[str, Any], change: tuple[str, Any]) -> None:
    put(spec, *change)


def _many_parameters(spec: dict[str, Any], count: int) -> None:
    spec["parameters"] = [{"name": f"p{i}", "type": "int", "min": 0, "max": i + 1} for i in range(count)]
    put(spec, f"{CONTAINER}.args", [])


def _values(spec: dict[str, Any], values: list[Any]) -> None:
    spec["parameters"][0] = {"name": spec["parameters"][0]["name"], "type": "categorical", "values": values}


def _parameter_name(spec: dict[str, Any], name: str) -> None:
    spec["parameters"][0]["name"] = name


def _metric(spec: dict[str, Any], metric: str) -> None:
    spec["objective"]["metric"] = metric


def _objectives(spec: dict[str, Any], change: tuple[bool, Any]) -> None:
    """`objectives` set to a choice, beside `objective` (kept) or instead of it."""
    keep, objectives = change
    metric = spec["objective"]["metric"]
    if not keep:
        del spec["objective"]
    spec["objectives"] = [{**o, "metric": o["metric"].replace("$metric", metric)} if isinstance(o, dict) else o
                          for o in objectives] if isinstance(objectives, list) else objectives


WALL = {"metric": "kubetune:wall_seconds", "goal": "minimize"}
OWN = {"metric": "$metric", "goal": "maximize"}


def _template_size(spec: dict[str, Any], size: int) -> None:
    spec["trialTemplate"]["template"]["metadata"] = {"annotations": {"blob": "x" * size}}


def _parameters(spec: dict[str, Any], parameters: list[dict[str, Any]]) -> None:
    spec["parameters"] = copy.deepcopy(parameters)
    put(spec, f"{CONTAINER}.args", [])


def _placeholder(spec: dict[str, Any], reference: str) -> None:
    put(spec, f"{CONTAINER}.args", ["x", reference])


def _range(spec: dict[str, Any], bounds: tuple[str, float, float]) -> None:
    kind, low, high = bounds
    spec["parameters"][0] = {"name": spec["parameters"][0]["name"], "type": kind, "min": low, "max": high}


def _job_name(spec: dict[str, Any], length: int) -> None:
    spec["__name__"] = "n" * length


def _container_field(spec: dict[str, Any], change: tuple[str, Any]) -> None:
    put(spec, f"{CONTAINER}.{change[0]}", change[1])


# kind -> (how to apply a choice, the choices). The table is applied entry by entry to one valid spec,
# and hypothesis picks from it at random for its generated specs.
MUTATIONS: dict[str, tuple[Callable[[dict[str, Any], Any], None], list[Any]]] = {
    "budget": (_budget, [
        {"maxTrials": 0}, {"maxTrials": -1}, {"maxTrials": -(2**63)}, {"maxTrials": 2**63 - 1},
        {"maxTrials": 3, "parallelism": 0}, {"maxTrials": 3, "parallelism": -5}, {"maxTrials": 2, "parallelism": 3},
        {"maxTrials": 3, "maxFailedTrials": -1}, {"maxTrials": 3, "activeDeadlineSeconds": 0},
        {"maxTrials": 1_000_000, "parallelism": 1},
    ]),
    "wrong-type": (_wrong_type, [
        ("budget.maxTrials", "five"), ("budget.maxTrials", 2.5), ("budget", [1, 2]), ("parameters", {}),
        ("parameters", []), ("parameters.0.name", 123), ("parameters.0.type", "complex"),
        ("parameters.0.log", "yes"), ("objective", "accuracy"), ("objective.goal", 3), ("objective.metric", ""),
        ("algorithm.name", "magic"), ("algorithm.seed", -1), ("trialTemplate.retries", 1.5),
        ("trialTemplate.template.spec.containers", "abc"), ("trialTemplate.template.spec.containers", []),
        (f"{CONTAINER}.name", None), (f"{CONTAINER}.env", "x"), (f"{CONTAINER}.env", [{"value": 1}]),
        (f"{CONTAINER}.args", 7), (f"{CONTAINER}.command", {"a": 1}), (f"{CONTAINER}.args", [{"nested": True}]),
        (f"{CONTAINER}.securityContext", "root"), (f"{CONTAINER}.ports", "8000"),
        ("trialTemplate.template.spec.initContainers", "x"), ("trialTemplate.template.metadata", "labels"),
        ("trialTemplate.template.metadata", {"labels": ["a"]}), ("trialTemplate.metricsPort", 70000),
        ("trialTemplate.metricsPath", "no-slash"), ("earlyStopping", {"rule": "asha"}), ("suspend", "no"),
    ]),
    "many-parameters": (_many_parameters, [64, 65, 200]),
    "objectives": (_objectives, [
        (False, [OWN, WALL]), (True, [OWN, WALL]), (False, [OWN, OWN]), (False, []), (False, "accuracy"),
        (False, [OWN, WALL, *({"metric": f"m{i}", "goal": "minimize"} for i in range(3))]), (False, [WALL, OWN]),
        (False, [OWN, {"metric": "kubetune:joules", "goal": "minimize"}]), (False, [{**OWN, "primary": "yes"}]),
        (False, [OWN, {**WALL, "promql": "up"}]), (False, [{**OWN, "primary": True}, {**WALL, "primary": True}]),
        (False, [{**OWN, "primary": True}, {"metric": "other", "goal": "minimize", "promql": "vector(1)"}]),
    ]),
    "values": (_values, [
        [f"v{i}" for i in range(256)], [f"v{i}" for i in range(257)], [f"v{i}" for i in range(5000)],
        ["x" * 200_000], ["ok", "\u0001\u001b[31m"], [True, False],
    ]),
    "hostile-name": (_parameter_name, [
        "Lr", "naïve", "a;b", "$(x)", "a-b", "_x", "x" * 64, "名前", 'x"}', "${params.x}",
    ]),
    "hostile-metric": (_metric, ['acc"} or vector(1) #', "val accuracy", "1acc", "a" * 64, "acc\n", "ü", "{{job}}"]),
    # Near and past what etcd (1.5 MiB) and the API server (3 MiB) take in one request.
    "huge-template": (_template_size, [200_000, 1_400_000, 3_200_000]),
    "conditions": (_parameters, CONDITION_SHAPES),
    "placeholder": (_placeholder, ["${params.nope}", "${params.}", "${params.A}", "${params.x"]),
    "extreme-range": (_range, [
        ("float", -1e308, 1e308), ("float", -8e307, 8e307), ("float", 1e-300, 1e300), ("int", -(2.0**53), 2.0**53),
        ("int", -(2.0**62), 2.0**62), ("int", 0, 1e19), ("int", -1e154, 1e154), ("float", 1, 1),
    ]),
    "long-job-name": (_job_name, [40, 41, 63, 254]),
    # Fine for the CRD (those container fields are free-form), refused when the pod is created.
    "pod-rejected": (_container_field, [
        ("securityContext", {"privileged": True}), ("resources", {"requests": {"cpu": "lots"}}),
        ("image", ""), ("volumeMounts", [{"name": "missing", "mountPath": "/x"}]),
    ]),
}


def apply_mutation(spec: dict[str, Any], kind: str, choice: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    if kind != "none":
        MUTATIONS[kind][0](spec, choice)
    return spec


@st.composite
def mutated(draw: st.DrawFn, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(what was done, the spec): one hostile change from the table, or (most often) none."""
    kind = draw(st.sampled_from(["none"] * 4 + sorted(MUTATIONS)))
    choice = draw(st.sampled_from(MUTATIONS[kind][1])) if kind != "none" else None
    return kind, apply_mutation(spec, kind, choice)


# --------------------------------------------------------------------------- the run


def operator_metrics(port: int) -> dict[str, float]:
    """Counters of the operator's /metrics: reconciles and reconcile errors."""
    samples = operator_samples(port)
    return {
        "reconciles": sum(s.value for s in samples if s.name == "kubetune_reconcile_duration_seconds_count"),
        "errors": sum(s.value for s in samples if s.name == "kubetune_reconcile_errors_total"),
    }


@dataclass
class Fuzzed:
    name: str
    kind: str
    expect: str = ""  # rejected | invalid | run
    detail: str = ""
    stored: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def fuzz_cluster(dev_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[Cluster, OperatorProcess, int]]:
    api_client = config.new_client_from_config(config_file=str(dev_cluster.kubeconfig))
    install_crds(api_client)
    core = client.CoreV1Api(api_client)
    namespace = fresh_namespace(core, "fuzz")
    port = free_ports(1)[0]
    operator = OperatorProcess(
        dev_cluster.kubeconfig, dev_cluster.prometheus_url, tmp_path_factory.mktemp("fuzz") / "operator.log",
        KUBETUNE_NAMESPACES=namespace, KUBETUNE_OPERATOR_METRICS_PORT=str(port),
    )
    operator.start()
    wait_for("operator /metrics", lambda: _reachable(port), timeout=60)
    yield Cluster(api_client, namespace), operator, port
    operator.stop()
    core.delete_namespace(namespace)
    api_client.close()


def _reachable(port: int) -> bool:
    try:
        operator_metrics(port)
    except OSError:
        return False
    return True


def _names_a_field(error: ApiException) -> bool:
    try:
        status = json.loads(error.body)
    except (TypeError, ValueError):
        return False
    fields = [c.get("field", "") for c in (status.get("details") or {}).get("causes") or []]
    message = str(status.get("message", ""))
    return any(f.startswith(("spec", "metadata")) for f in fields) or bool(re.search(r"\bspec\.|metadata\.", message))


def _oracle(stored: dict[str, Any]) -> tuple[str, str]:
    """What the operator must do with an accepted object: ("invalid", why) or ("run", "")."""
    try:
        problem = validate_job(TuningJob.model_validate(stored))
    except ValidationError as error:
        return "invalid", str(error).splitlines()[1] if len(str(error).splitlines()) > 1 else str(error)
    return ("invalid", problem) if problem else ("run", "")


def test_generated_specs_are_rejected_marked_invalid_or_run(
    fuzz_cluster: tuple[Cluster, OperatorProcess, int],
) -> None:
    cluster, operator, port = fuzz_cluster
    started = time.monotonic()
    results: list[Fuzzed] = []

    def record(kind: str, spec: dict[str, Any]) -> None:
        spec = copy.deepcopy(spec)
        name = spec.pop("__name__", None) or f"fz-{len(results)}"
        if name.startswith("nnn"):  # long-name cases: unique, same length
            name = f"{name[:-8]}{len(results):08d}"
        entry = Fuzzed(name=name, kind=kind)
        manifest = {"apiVersion": "kubetune.io/v1alpha1", "kind": "TuningJob", "metadata": {"name": name},
                    "spec": spec}
        try:
            entry.stored = cluster.create_job(manifest)
        except ApiException as error:
            entry.expect, entry.detail = "rejected", f"{error.status} {error.reason}"
            assert error.status < 500, f"{kind}: the API server failed on our CRD: {error.status} {error.body[:2000]}"
            assert error.status == 413 or _names_a_field(error), f"{kind}: {error.body[:2000]}"
        else:
            entry.expect, entry.detail = _oracle(entry.stored)
        results.append(entry)

    # Every table entry once, then generated specs with random mutations.
    for kind, (_, choices) in MUTATIONS.items():
        for choice in choices:
            record(kind, apply_mutation(BASE_SPEC, kind, choice))
    record("none", BASE_SPEC)

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(case=valid_spec().flatmap(mutated))
    def generated(case: tuple[str, dict[str, Any]]) -> None:
        record(*case)

    generated()
    accepted = [r for r in results if r.expect != "rejected"]

    def settled(entry: Fuzzed) -> bool:
        job = cluster.job(entry.name)
        valid = condition(job, "Valid")
        if entry.expect == "invalid":
            return bool(valid and valid["status"] == "False" and valid["reason"] == "InvalidSpec" and valid["message"])
        if cluster.pods(entry.name):
            return True
        # The cluster refused the pods (a template valid for us, not for the API server or Pod Security):
        # each trial fails with the API server's reason, the job ends with it, nothing is retried in a loop.
        trials = cluster.trials(entry.name)
        rejected = [t for t in trials if (t.get("status") or {}).get("reason") == "PodRejected"]
        if trials and len(rejected) == len(trials) and job["status"].get("phase") == "Failed":
            assert "PodRejected" in job["status"]["message"], job["status"]
            entry.detail = "pods rejected"
            return True
        return False

    pending = list(accepted)

    def all_settled() -> bool:
        pending[:] = [e for e in pending if not settled(e)]
        assert operator.alive(), operator.log_tail()
        return not pending

    try:
        wait_for("every accepted job marked invalid or running", all_settled, timeout=SETTLE_TIMEOUT, interval=2.0)
    except AssertionError:
        report = "\n".join(f"{e.name} [{e.kind}] expected {e.expect} ({e.detail}): "
                           f"{json.dumps(cluster.job(e.name).get('status'))[:400]}" for e in pending)
        raise AssertionError(f"jobs that never settled:\n{report}\n--- operator log\n{operator.log_tail(80)}") from None

    # Valid jobs had their trials started. Small unmodified ones must also finish, all trials succeeding
    # (the trial command fails on any argv that is not the exact value). The rest are deleted to free the node.
    runners = [e for e in accepted if e.expect == "run"]
    small = [e for e in runners if e.kind == "none" and e.stored["spec"]["budget"]["maxTrials"] <= 3]
    for entry in runners:
        if entry not in small:
            cluster.custom.delete_namespaced_custom_object(
                "kubetune.io", "v1alpha1", cluster.namespace, "tuningjobs", entry.name,
                body=client.V1DeleteOptions(propagation_policy="Background"))
    completed = 0
    for entry in small:
        job = cluster.wait_finished(entry.name, timeout=300)
        failed = [t["status"] for t in cluster.trials(entry.name) if t["status"].get("phase") != "Succeeded"]
        assert job["status"]["phase"] == "Succeeded" and not failed, (entry, job["status"], failed)
        completed += 1
    assert completed >= 1, "no generated valid job ran to completion"

    # No hot loop: once every job is finished, invalid or deleted (and the garbage collector is done with
    # the deleted ones' trials and pods), the operator goes quiet: its reconcile counter stops moving.
    def quiet() -> dict[str, float] | None:
        first = operator_metrics(port)
        time.sleep(QUIET_SECONDS)
        second = operator_metrics(port)
        return second if second["reconciles"] == first["reconciles"] else None

    unfinished = [j["metadata"]["name"] for j in cluster.custom.list_namespaced_custom_object(
        "kubetune.io", "v1alpha1", cluster.namespace, "tuningjobs")["items"]
        if (j.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    assert not unfinished, unfinished
    after = wait_for("the operator's reconcile counter to stop", quiet, timeout=120, interval=0.1)
    assert operator.alive(), operator.log_tail()
    assert after["errors"] == 0, ("reconciles raised", after, operator.log_tail(80))
    assert "Traceback" not in operator.log_path.read_text(errors="replace"), operator.log_tail(80)

    counts = Counter(r.expect for r in results)
    refused = sum(r.detail == "pods rejected" for r in results)
    by_kind = Counter((r.kind, r.expect) for r in results)
    print(f"\nfuzzed {len(results)} TuningJob specs in {time.monotonic() - started:.0f}s: "
          f"{counts['rejected']} rejected at admission, {counts['invalid']} marked Valid=False, "
          f"{counts['run']} ran ({completed} to completion, {refused} with every pod refused by the API server); "
          f"reconciles {after['reconciles']:.0f}, errors 0")
    for (kind, expect), n in sorted(by_kind.items()):
        print(f"  {kind:16} {expect:9} {n}")

