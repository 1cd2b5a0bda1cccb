"""The committed CRDs are exactly what the models generate, and are structural."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from kubetune.api.crd import GENERATED_HEADER, build_crds, render_crds

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_the_models() -> None:
    rendered = render_crds()
    on_disk = {path.name for path in CRD_DIR.glob("*.yaml")}
    assert on_disk == set(rendered), "crds/ has extra or missing files: run `kubetune crds`"
    for name, text in rendered.items():
        assert (CRD_DIR / name).read_text() == text, f"crds/{name} drifted from the models: run `kubetune crds`"
        assert text.startswith(GENERATED_HEADER)


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        nodes += walk(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += walk(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        nodes += walk(schema["items"], f"{path}[]")
    return nodes


def test_schemas_are_structural_and_documented() -> None:
    for crd in build_crds().values():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in walk(schema):
            for forbidden in ("anyOf", "oneOf", "allOf", "$ref", "title", "nullable"):
                assert forbidden not in node, f"{path} has {forbidden}"
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        spec = schema["properties"]["spec"]
        assert not spec.get("x-kubernetes-preserve-unknown-fields"), "the spec must be validated, not preserved"
        for path, node in walk(spec):
            if path.count(".") == 1 and not path.endswith("]"):
                assert node.get("description"), f"spec field {path} needs a description for kubectl explain"


def test_tuningjob_crd_shape() -> None:
    crd = build_crds()["kubetune.io_tuningjobs.yaml"]
    assert crd["spec"]["names"]["shortNames"] == ["tj"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:4] == ["Phase", "Trials", "Running", "Best"]
    parameters = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["parameters"]
    assert parameters["x-kubernetes-list-map-keys"] == ["name"]
    rules = [r["message"] for r in parameters["items"]["x-kubernetes-validations"]]
    assert "min must be less than max" in rules and "log scale needs min > 0" in rules


def test_crd_yaml_round_trips() -> None:
    for name, text in render_crds().items():
        assert yaml.safe_load(text) == build_crds()[name]


def spec_schema() -> dict[str, Any]:
    crd = build_crds()["kubetune.io_tuningjobs.yaml"]
    spec: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


def test_kubectl_explain_states_every_spec_default() -> None:
    # kubectl explain shows descriptions only: a field with a default must say it there.
    defaults = [(path, node) for path, node in walk(spec_schema()) if "default" in node]
    assert len(defaults) > 20
    for path, node in defaults:
        shown = node["default"] if isinstance(node["default"], str) else json.dumps(node["default"])
        assert f"Default: {shown}." in node.get("description", ""), f"spec{path} does not state its default"


def test_kubectl_explain_says_how_each_rule_and_algorithm_decides() -> None:
    from kubetune.api import AlgorithmName, EarlyStoppingRule

    early = spec_schema()["properties"]["earlyStopping"]
    assert early["properties"]["rule"]["enum"] == [rule.value for rule in EarlyStoppingRule]
    described = early["properties"]["rule"]["description"]
    for rule in EarlyStoppingRule:
        assert f"{rule.value}: {rule.decides}." in " ".join(described.split())
    assert "median of the running averages" in described and "1/reductionFactor" in described
    assert "never stopped" in early["properties"]["maxResource"]["description"]
    name = spec_schema()["properties"]["algorithm"]["properties"]["name"]
    assert name["enum"] == [a.value for a in AlgorithmName]
    for algorithm in AlgorithmName:
        assert f"{algorithm.value}: {algorithm.summary}." in name["description"]


def test_rules_that_need_a_field_are_checked_at_admission() -> None:
    early = spec_schema()["properties"]["earlyStopping"]
    checks = {rule["message"]: rule["rule"] for rule in early["x-kubernetes-validations"]}
    assert checks["rules asha and hyperband need maxResource"] == (
        "!(self.rule in ['asha', 'hyperband']) || has(self.maxResource)"
    )
    assert checks["rule percentile needs percentile"] == "!(self.rule in ['percentile']) || has(self.percentile)"
