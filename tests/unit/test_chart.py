"""The Helm chart: lints, renders every scenario, grants exactly the least privileges, validates values."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart import (
    CHART,
    CI_VALUES,
    OPERATOR_RULES,
    README,
    helm,
    of_kind,
    one,
    readme_with_table,
    render,
    render_error,
    workload_rule,
)

from kubetune.api.crd import CHART_HEADER, build_crds, escape_helm, render_chart_crds


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


# --------------------------------------------------------------------------- lint and render


def test_every_scenario_has_a_values_file() -> None:
    assert {p.name for p in CI_VALUES} == {"default-values.yaml", "namespaced-values.yaml", "monitoring-values.yaml",
                                           "dev-values.yaml"}


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_lint_strict_and_template(values: Path) -> None:
    lint = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert "0 chart(s) failed" in lint.stdout
    manifests = render("-f", str(values))
    for manifest in manifests:
        assert manifest.get("apiVersion") and manifest.get("kind"), manifest
        assert manifest["metadata"]["labels"]["app.kubernetes.io/instance"] == "kt", manifest["metadata"]["name"]


def test_default_release_objects() -> None:
    kinds = sorted(m["kind"] for m in render())
    assert kinds == sorted(
        ["CustomResourceDefinition", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Deployment",
         "Pod", "Service", "ServiceAccount"]
    )


def test_monitoring_scenario_objects() -> None:
    manifests = render("-f", str(CHART / "ci" / "monitoring-values.yaml"))
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"):
        one(manifests, kind)


# --------------------------------------------------------------------------- the operator's Deployment


def test_deployment_is_hardened_and_single() -> None:
    deployment = one(render(), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["command"] == ["kubetune", "operator"]
    assert container["image"] == "ghcr.io/kubetune/operator:0.1.0"  # tag defaults to appVersion
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8081, "metrics": 9102}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    # the dev cluster's Prometheus finds the operator by this label and the port name `metrics`
    assert spec["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "kubetune"
    assert env_of(deployment) == {
        "KUBETUNE_OPERATOR_ID": "kubetune/kt-kubetune",  # the release: stable across restarts, one per install
        "KUBETUNE_PROMETHEUS_URL": "",
        "KUBETUNE_NAMESPACES": "",
        "KUBETUNE_WORKLOAD_KINDS": "",  # pod trials only
        "KUBETUNE_WORKERS": "4",
        "KUBETUNE_METRICS_POLL_SECONDS": "2",
        "KUBETUNE_FINAL_METRICS_GRACE_SECONDS": "30",
        "KUBETUNE_RESYNC_SECONDS": "30",
        "KUBETUNE_KEEP_FINISHED_PODS": "1000",
        "KUBETUNE_OPERATOR_METRICS_PORT": "9102",
        "KUBETUNE_HEALTH_PORT": "8081",
    }


def test_dev_cluster_values() -> None:
    """ci/dev-values.yaml (make demo, tests/e2e/test_chart_install.py): the chart's own command, which the
    dev node agent finds in the repository's .venv; the operator binds its pod IP there."""
    deployment = one(render("-f", str(CHART / "ci" / "dev-values.yaml")), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kubetune", "operator"]
    listen = next(e for e in container["env"] if e["name"] == "KUBETUNE_LISTEN_ADDRESS")
    assert listen["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env_of(deployment)["KUBETUNE_METRICS_POLL_SECONDS"] == "0.5"


def test_the_operator_pod_names_its_metrics_job() -> None:
    """The dev Prometheus (pod discovery) labels the operator's series with the job a ServiceMonitor would
    give them, read from this annotation: the alerts' up{job=...} works on both."""
    from kubetune_dev.prometheus import OPERATOR_JOB_ANNOTATION, OPERATOR_PODS_JOB, build_prometheus_config, meta_label

    manifests = render()
    template = one(manifests, "Deployment")["spec"]["template"]
    service = one(manifests, "Service")["metadata"]["name"]
    assert template["metadata"]["annotations"] == {OPERATOR_JOB_ANNOTATION: service}
    config = build_prometheus_config(kubeconfig=Path("/k"), targets_dir=Path("/t"))
    pods_job = next(j for j in config["scrape_configs"] if j["job_name"] == OPERATOR_PODS_JOB)
    relabel = next(r for r in pods_job["relabel_configs"] if r.get("target_label") == "job")
    assert relabel["source_labels"] == [meta_label("__meta_kubernetes_pod_annotation_", OPERATOR_JOB_ANNOTATION)]
    disabled = one(render("--set", "metrics.enabled=false", "--set", "podAnnotations.a=b"), "Deployment")
    assert disabled["spec"]["template"]["metadata"]["annotations"] == {"a": "b"}
    assert "annotations" not in one(render("--set", "metrics.enabled=false"), "Deployment")["spec"]["template"][
        "metadata"]


def test_values_reach_the_operator() -> None:
    deployment = one(
        render(
            "--set", "operator.prometheusUrl=http://prom:9090", "--set", "operator.workers=8",
            "--set", "metrics.enabled=false", "--set-string", "image.tag=1.2.3", "--set", "operator.verbose=true",
            "--set", "operator.extraEnv[0].name=EXTRA", "--set", "operator.extraEnv[0].value=x",
        ),
        "Deployment",
    )
    env = env_of(deployment)
    assert env["KUBETUNE_PROMETHEUS_URL"] == "http://prom:9090"
    assert env["KUBETUNE_WORKERS"] == "8"
    assert env["KUBETUNE_OPERATOR_METRICS_PORT"] == "0"
    assert env["EXTRA"] == "x"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith(":1.2.3")
    assert container["args"] == ["--verbose"]
    assert "metrics" not in {p["name"] for p in container["ports"]}


def test_an_image_digest_pins_the_operator() -> None:
    digest = "sha256:" + "ab" * 32
    pinned = one(render("--set", f"image.digest={digest}", "--set", "image.registry=127.0.0.1:5000"), "Deployment")
    image = pinned["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"127.0.0.1:5000/kubetune/operator@{digest}"  # the tag is not used
    bare = one(render("--set", "image.registry=", "--set", "image.repository=example.org/ops/kubetune"), "Deployment")
    assert bare["spec"]["template"]["spec"]["containers"][0]["image"] == "example.org/ops/kubetune:0.1.0"


def test_the_service_selects_only_the_operator_pod() -> None:
    manifests = render()
    service = one(manifests, "Service")
    deployment = one(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9102, "targetPort": "metrics", "protocol": "TCP"}]
    test_pod = one(manifests, "Pod")
    assert not service["spec"]["selector"].items() <= test_pod["metadata"]["labels"].items()
    assert not deployment["spec"]["selector"]["matchLabels"].items() <= test_pod["metadata"]["labels"].items()


# --------------------------------------------------------------------------- RBAC


def test_cluster_wide_rbac_is_exactly_the_least_set() -> None:
    manifests = render()
    role = one(manifests, "ClusterRole")
    assert role["rules"] == OPERATOR_RULES
    binding = one(manifests, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kt-kubetune"}
    account = one(manifests, "ServiceAccount")
    subject = {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "kubetune"}
    assert binding["subjects"] == [subject]
    assert not of_kind(manifests, "Role") and not of_kind(manifests, "RoleBinding")


def test_namespaced_rbac_has_no_cluster_permissions() -> None:
    manifests = render("-f", str(CHART / "ci" / "namespaced-values.yaml"))
    assert not of_kind(manifests, "ClusterRole") and not of_kind(manifests, "ClusterRoleBinding")
    roles = of_kind(manifests, "Role")
    bindings = of_kind(manifests, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for role in roles:
        assert role["rules"] == OPERATOR_RULES
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == "kubetune"
    assert env_of(one(manifests, "Deployment"))["KUBETUNE_NAMESPACES"] == "team-a,team-b"
    podmonitor = one(manifests, "PodMonitor")
    assert podmonitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


JOBS = {"group": "batch", "version": "v1", "resource": "jobs"}
JOBSETS = {"group": "jobset.x-k8s.io", "version": "v1alpha2", "resource": "jobsets"}


@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster-wide", "namespaced"])
@pytest.mark.parametrize("kinds", [[], [JOBS], [JOBS, JOBSETS]], ids=["no-kind", "jobs", "jobs+jobsets"])
def test_workload_kinds_reach_the_operator_with_exactly_their_rules(
    kinds: list[dict[str, str]], namespaced: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """workloadKinds: the operator watches exactly those kinds (the env var parsed as the operator parses it)
    and each (Cluster)Role adds one rule per kind, with the verbs a trial's attempt needs, to the least set."""
    from kubetune.controller.templates import Resource, parse_resource
    from kubetune.handlers.config import OperatorConfig

    args = ["--set-json", f"workloadKinds={json.dumps(kinds)}"]
    if namespaced:
        args += ["--set-json", 'watchNamespaces=["team-a","team-b"]']
    manifests = render(*args)
    monkeypatch.setenv("KUBETUNE_WORKLOAD_KINDS", env_of(one(manifests, "Deployment"))["KUBETUNE_WORKLOAD_KINDS"])
    watched = [parse_resource(k) for k in OperatorConfig.from_env().workload_kinds]
    assert watched == [Resource(k["group"], k["version"], k["resource"]) for k in kinds]
    expected = OPERATOR_RULES + [workload_rule(k["group"], k["resource"]) for k in kinds]
    roles = of_kind(manifests, "Role" if namespaced else "ClusterRole")
    assert len(roles) == (2 if namespaced else 1)
    assert not of_kind(manifests, "ClusterRole" if namespaced else "Role")
    for role in roles:
        assert role["rules"] == expected
    selftest = {e["name"]: e["value"] for e in one(manifests, "Pod")["spec"]["containers"][0]["env"]}
    assert json.loads(selftest["KUBETUNE_SELFTEST_RULES"]) == expected  # `helm test` checks them too


def test_rbac_and_service_account_can_be_left_out() -> None:
    manifests = render("--set", "rbac.create=false", "--set", "serviceAccount.create=false",
                       "--set", "serviceAccount.name=my-operator")
    assert not [m for m in manifests if m["kind"] in ("ClusterRole", "ClusterRoleBinding", "ServiceAccount")]
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "my-operator"


def test_the_helm_test_checks_the_same_rules() -> None:
    test_pod = one(render(), "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = test_pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert json.loads(env["KUBETUNE_SELFTEST_RULES"]) == OPERATOR_RULES
    assert container["command"][:2] == ["python", "-c"]
    assert container["command"][2] == (CHART / "files" / "selftest.py").read_text()
    assert test_pod["spec"]["serviceAccountName"] == "kt-kubetune"
    assert env["KUBETUNE_SELFTEST_OPERATOR_SELECTOR"] == (
        "app.kubernetes.io/component=operator,app.kubernetes.io/instance=kt,app.kubernetes.io/name=kubetune"
    )


# --------------------------------------------------------------------------- CRDs


def test_chart_crds_are_the_generated_crds() -> None:
    rendered = {m["metadata"]["name"]: m for m in of_kind(render(), "CustomResourceDefinition")}
    generated = {c["metadata"]["name"]: c for c in build_crds().values()}
    assert rendered.keys() == generated.keys()
    for name, crd in generated.items():
        chart_crd = rendered[name]
        assert chart_crd["spec"] == crd["spec"], f"{name}: chart CRD spec differs from the generated one"
        assert chart_crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"].items() <= chart_crd["metadata"]["labels"].items()


def test_chart_crd_templates_are_up_to_date() -> None:
    directory = CHART / "templates" / "crds"
    rendered = render_chart_crds()
    assert {p.name for p in directory.glob("*.yaml")} == set(rendered), "run `kubetune crds`"
    for name, text in rendered.items():
        assert (directory / name).read_text() == text, f"templates/crds/{name} drifted: run `kubetune crds`"
        assert text.startswith(CHART_HEADER)


def test_helm_escaping_round_trips() -> None:
    assert escape_helm("a {{namespace}} b }} {{") == 'a {{ "{{" }}namespace{{ "}}" }} b {{ "}}" }} {{ "{{" }}'
    crd = of_kind(render(), "CustomResourceDefinition")
    text = json.dumps(crd)
    assert "{{namespace}}" in text, "the promql description's placeholders must survive rendering"


def test_crd_toggles() -> None:
    assert not of_kind(render("--set", "crds.enabled=false"), "CustomResourceDefinition")
    for crd in of_kind(render("--set", "crds.keep=false"), "CustomResourceDefinition"):
        assert "annotations" not in crd["metadata"]


# --------------------------------------------------------------------------- monitoring objects


def test_monitors() -> None:
    manifests = render("-f", str(CHART / "ci" / "monitoring-values.yaml"))
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    podmonitor = one(manifests, "PodMonitor")
    spec = podmonitor["spec"]
    assert spec["selector"] == {"matchLabels": {"kubetune.io/scrape": "true"}}
    assert spec["namespaceSelector"] == {"any": True}
    assert spec["podTargetLabels"] == ["kubetune.io/job", "kubetune.io/trial"]
    endpoint = spec["podMetricsEndpoints"][0]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics" and endpoint["interval"] == "5s"
    assert endpoint["relabelings"][0]["sourceLabels"] == ["__meta_kubernetes_pod_annotation_kubetune_io_metrics_path"]
    assert endpoint["relabelings"][0]["targetLabel"] == "__metrics_path__"


def test_prometheus_rule_alerts() -> None:
    manifests = render("-f", str(CHART / "ci" / "monitoring-values.yaml"))
    rule = one(manifests, "PrometheusRule")
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {"KubetuneOperatorDown", "KubetuneTrialsFailing", "KubetuneTuningJobStalled",
                           "KubetunePrometheusErrors"}
    assert 'up{job="kt-kubetune-metrics", namespace="kubetune"}' in alerts["KubetuneOperatorDown"]["expr"]
    assert "[60m]" in alerts["KubetuneTuningJobStalled"]["expr"]
    for alert in alerts.values():
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["labels"]["team"] == "ml-platform"
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    assert "{{ $labels.tuningjob }}" in alerts["KubetuneTrialsFailing"]["annotations"]["description"]
    stalled = render("-f", str(CHART / "ci" / "monitoring-values.yaml"),
                     "--set", "metrics.prometheusRule.stalledMinutes=90")
    assert "offset 90m" in {r["alert"]: r for r in one(stalled, "PrometheusRule")["spec"]["groups"][0]["rules"]}[
        "KubetuneTuningJobStalled"]["expr"]


def test_dashboard_configmap_ships_the_generated_dashboard() -> None:
    manifests = render("-f", str(CHART / "ci" / "monitoring-values.yaml"))
    configmap = one(manifests, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    shipped = json.loads(configmap["data"]["kubetune.json"])
    assert shipped == json.loads((CHART / "dashboards" / "kubetune.json").read_text())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true"],
         "metrics.serviceMonitor.enabled=true needs metrics.enabled=true"),
        (["--set", "metrics.prometheusRule.enabled=true"],
         "metrics.prometheusRule.enabled=true needs metrics.serviceMonitor.enabled=true"),
        (["--set", "metrics.enabled=false", "--set", "dashboard.enabled=true"], "dashboard.enabled=true needs"),
        (["--set", "metrics.port=8081"], "metrics.port and operator.healthPort must differ"),
    ],
)
def test_inconsistent_values_fail_with_a_message(args: list[str], message: str) -> None:
    assert message in render_error(*args)


# --------------------------------------------------------------------------- values and their schema


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "unknownKey=1"], "additional properties 'unknownKey' not allowed"),
        (["--set", "operator.wrkers=4"], "at '/operator': additional properties 'wrkers' not allowed"),
        (["--set", "metrics.serviceMonitor.enabeld=true"], "additional properties 'enabeld' not allowed"),
        (["--set", "operator.workers=abc"], "at '/operator/workers': got string, want integer"),
        (["--set", "crds.keep=maybe"], "at '/crds/keep': got string, want boolean"),
        (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy'"),
        (["--set", "watchNamespaces={Team_A}"], "at '/watchNamespaces/0'"),
        (["--set", "metrics.podMonitor.interval=15 seconds"], "at '/metrics/podMonitor/interval'"),
        (["--set", "operator.prometheusUrl=prometheus:9090"], "at '/operator/prometheusUrl'"),
        (["--set", "metrics.prometheusRule.failingRatio=2"], "at '/metrics/prometheusRule/failingRatio'"),
        (["--set-json", 'workloadKinds=["batch/v1/jobs"]'], "at '/workloadKinds/0': got string, want object"),
        (["--set-json", 'workloadKinds=[{"group":"batch","version":"v1"}]'],
         "at '/workloadKinds/0': missing property 'resource'"),
        (["--set-json", 'workloadKinds=[{"group":"batch","version":"v1","resource":"Job"}]'],
         "at '/workloadKinds/0/resource'"),
        (["--set-json", 'workloadKinds=[{"group":"","version":"v1","resource":"pods"}]'],
         "at '/workloadKinds/0/group'"),
        (["--set-json", 'workloadKinds=[{"group":"batch","version":"1","resource":"jobs"}]'],
         "at '/workloadKinds/0/version'"),
        (["--set-json", 'workloadKinds=[{"group":"batch","version":"v1","resource":"jobs","kind":"Job"}]'],
         "at '/workloadKinds/0': additional properties 'kind' not allowed"),
    ],
)
def test_schema_rejects_bad_values_with_a_clear_message(args: list[str], message: str) -> None:
    error = render_error(*args)
    assert "values don't meet the specifications of the schema" in error
    assert message in error, error


def _schema_keys(schema: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for name, child in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        keys.add(path)
        keys |= _schema_keys(child, path + ".")
    return keys


def _value_keys(values: Any, schema: dict[str, Any], prefix: str = "") -> set[str]:
    """Keys of values.yaml, descending only where the schema defines the object's properties."""
    keys = set()
    if isinstance(values, dict) and "properties" in schema:
        for name, child in values.items():
            path = f"{prefix}{name}"
            keys.add(path)
            keys |= _value_keys(child, schema["properties"].get(name, {}), path + ".")
    return keys


def _closed_objects(schema: dict[str, Any], path: str = "") -> list[str]:
    """Objects with declared properties that still accept unknown keys."""
    found = []
    if "properties" in schema and schema.get("additionalProperties") is not False:
        found.append(path or "<root>")
    for name, child in schema.get("properties", {}).items():
        found += _closed_objects(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += _closed_objects(schema["items"], f"{path}[]")
    return found


def test_schema_and_values_have_the_same_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    in_schema = _schema_keys(schema) - {"global"}  # global: passed down by parent charts, never set here
    in_values = _value_keys(values, schema)
    assert in_values - in_schema == set(), "values.yaml keys missing from values.schema.json"
    assert in_schema - in_values == set(), "values.schema.json keys missing from values.yaml"
    extra_operator = [k for k in _closed_objects(schema) if k not in (".operator.extraEnv[]",)]
    assert extra_operator == [], "every object with declared properties must set additionalProperties: false"


def test_every_schema_value_is_described() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def undocumented(node: dict[str, Any], path: str) -> list[str]:
        missing = []
        for name, child in node.get("properties", {}).items():
            if "properties" in child:  # a group: its values carry the descriptions
                missing += undocumented(child, f"{path}.{name}")
            elif "description" not in child and not path.endswith(("resources", "extraEnv")):
                missing.append(f"{path}.{name}")
        return missing

    assert undocumented(schema, "") == []


def test_every_value_has_a_doc_comment() -> None:
    """helm-docs style: each value (a leaf, or a free-form map/list/object) has a `# --` comment above it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    schema = json.loads((CHART / "values.schema.json").read_text())
    free_form_with_properties = {("resources",)}  # documented as one value, like a k8s object
    undocumented = []
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z_][A-Za-z0-9_]*):", line)
        if not match:
            continue
        indent, key = len(match[1]), match[2]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = tuple(k for _, k in stack) + (key,)
        stack.append((indent, key))
        nodes: list[dict[str, Any]] = []
        node: dict[str, Any] | None = schema
        for part in path:
            node = (node or {}).get("properties", {}).get(part)
            nodes.append(node or {})
        units = [
            "properties" not in n or path[: i + 1] in free_form_with_properties for i, n in enumerate(nodes)
        ]
        if any(units[:-1]):
            continue  # inside a value's default (resources.requests, securityContext.capabilities, ...)
        if not units[-1]:
            continue  # a group of values: its values carry the comments
        previous = number - 1
        while previous >= 0 and lines[previous].lstrip().startswith("#") and not lines[previous].lstrip().startswith(
            "# --"
        ):
            previous -= 1
        if previous < 0 or not lines[previous].lstrip().startswith("# --"):
            undocumented.append(".".join(path))
    assert undocumented == []
    assert len([line for line in lines if line.lstrip().startswith("# --")]) >= 40


def notes(*args: str) -> str:
    """NOTES.txt rendered without a cluster: a copy of the chart where it is an ordinary template."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "kubetune"
        shutil.copytree(CHART, chart)
        text = (chart / "templates" / "NOTES.txt").read_text()
        (chart / "templates" / "zz-notes.yaml").write_text(
            '{{- define "test.notes" }}' + text + '{{- end }}\nnotes: {{ include "test.notes" . | toJson }}\n'
        )
        result = helm("template", "kt", str(chart), "--namespace", "kubetune", "--show-only", "templates/zz-notes.yaml",
                      *args)
        return str(yaml.safe_load(result.stdout)["notes"])


def test_notes_tell_the_next_step() -> None:
    default = notes()
    assert "kubectl apply -n default -f examples/digits-random.yaml" in default
    assert "kubectl get tj -n default -w" in default
    assert "http://kt-kubetune-metrics.kubetune.svc:9102/metrics" in default
    assert "helm test kt -n kubetune" in default
    assert "early stopping is off" in default
    namespaced = notes("-f", str(CHART / "ci" / "namespaced-values.yaml"))
    assert "kubectl get tj -n team-a -w" in namespaced
    assert "The operator watches TuningJobs in: team-a, team-b." in namespaced


def test_readme_values_table_is_up_to_date() -> None:
    readme = README.read_text()
    assert readme_with_table(readme) == readme, "run `python tests/unit/helm_chart.py`"
    assert "| `operator.workers` | integer | `4` |" in readme


def test_kubetune_crds_writes_and_checks_the_chart_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubetune.cli import main

    chart_crds = tmp_path / "chart-crds"
    assert main(["crds", "-o", str(tmp_path / "crds"), "--chart-dir", str(chart_crds)]) == 0
    assert {p.name: p.read_text() for p in chart_crds.iterdir()} == render_chart_crds()
    assert main(["crds", "--check", "-o", str(tmp_path / "crds"), "--chart-dir", str(chart_crds)]) == 0
    (chart_crds / "kubetune.io_trials.yaml").write_text("stale\n")
    assert main(["crds", "--check", "-o", str(tmp_path / "crds"), "--chart-dir", str(chart_crds)]) == 1
    monkeypatch.chdir(tmp_path)  # outside the repository the default chart path is skipped, not created
    assert main(["crds", "-o", "out"]) == 0
    assert not (tmp_path / "helm").exists()
