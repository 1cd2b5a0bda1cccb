"""kubetune.search's public surface: bad input, purity, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.api import TuningJobSpec
from kubetune.cli import main
from kubetune.search import FrozenEntry, History, SearchError, SettledHistory, stop, suggest
from kubetune.search._history import parse_history
from kubetune.search._space import Space, load_spec

TEMPLATE = {"template": {"spec": {"containers": [{"name": "trainer", "image": "trainer"}]}}}
SPEC: dict[str, Any] = {
    "objective": {"metric": "loss", "goal": "minimize"},
    "parameters": [
        {"name": "lr", "type": "float", "min": 1e-4, "max": 1.0, "log": True},
        {"name": "kind", "type": "categorical", "values": ["a", "b"]},
    ],
    "algorithm": {"name": "tpe", "seed": 3},
    "earlyStopping": {"rule": "median", "minTrials": 2},
    "budget": {"maxTrials": 20, "parallelism": 2},
    "trialTemplate": TEMPLATE,
}
GOOD = {"parameters": {"lr": 0.01, "kind": "a"}, "state": "Succeeded", "objective": 0.5}


def test_the_engine_imports_neither_kubernetes_nor_kopf_nor_optuna_eagerly() -> None:
    code = "import sys, kubetune.search\nprint(sorted(m for m in ('kopf', 'kubernetes', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_search_error_is_a_value_error() -> None:
    assert issubclass(SearchError, ValueError)


def test_a_spec_model_works_like_its_manifest() -> None:
    history = [GOOD]
    assert suggest(TuningJobSpec.model_validate(SPEC), history, 3) == suggest(SPEC, history, 3)


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ({"not": "a list"}, "history must be a list"),
        ("trials", "history must be a list"),
        ([42], r"history\[0\]: expected a mapping"),
        ([{"state": "Succeeded"}], r"history\[0\]: missing parameters"),
        ([{"parameters": {"lr": 0.1, "kind": "a"}}], r"history\[0\]: missing state"),
        ([GOOD, {**GOOD, "state": "Done"}], r"history\[1\]\.state: unknown state 'Done'"),
        ([{**GOOD, "objective": "0.5"}], r"history\[0\]\.objective: expected a number"),
        ([{**GOOD, "objective": True}], r"history\[0\]\.objective: expected a number"),
        ([{**GOOD, "parameters": [1, 2]}], r"history\[0\]\.parameters: expected a mapping"),
        ([{**GOOD, "parameters": {"lr": [0.1]}}], r"history\[0\]\.parameters\['lr'\]"),
        ([{**GOOD, "intermediate": [[1, 0.5, 3]]}], r"history\[0\]\.intermediate\[0\]"),
        ([{**GOOD, "intermediate": "fast"}], r"history\[0\]\.intermediate: expected a list"),
        ([{**GOOD, "intermediate": [[float("inf"), 0.5]]}], r"resource must be finite"),
        ([{**GOOD, "objectve": 0.4}], r"history\[0\]: unknown key\(s\) \['objectve'\]"),
    ],
)
def test_malformed_history_is_a_search_error_naming_the_entry(history: Any, message: str) -> None:
    with pytest.raises(SearchError, match=message):
        suggest(SPEC, history, 1)
    with pytest.raises(SearchError, match=message):
        stop(SPEC, history)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algorithm": {"name": "simulated-annealing"}}, "algorithm.name"),
        ({"parameters": []}, "parameters"),
        ({"parameters": [{"name": "lr", "type": "float", "min": 1.0, "max": 0.1}]}, "min"),
        ({"earlyStopping": {"rule": "asha"}}, "maxResource"),
    ],
)
def test_bad_specs_are_search_errors(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SearchError, match=message):
        suggest({**SPEC, **change}, [], 1)


def test_non_mapping_spec_and_non_integer_n_are_search_errors() -> None:
    with pytest.raises(SearchError, match="spec must be a mapping"):
        suggest(["spec"], [], 1)  # type: ignore[arg-type]
    with pytest.raises(SearchError, match="n must be an integer"):
        suggest(SPEC, [], 2.5)  # type: ignore[arg-type]


def test_values_the_engine_cannot_use_are_tolerated_not_fatal() -> None:
    odd = [
        {"parameters": {"lr": 0.01, "kind": "a"}, "state": "Succeeded", "objective": float("nan")},
        {"parameters": {"lr": 0.02, "kind": "a"}, "state": "Succeeded", "objective": float("-inf")},
        {"parameters": {"lr": 0.03, "kind": "a"}, "state": "Succeeded"},  # no objective
        {"parameters": {"lr": 50.0, "kind": "z", "extra": 1}, "state": "Succeeded", "objective": 0.1},  # other space
        {"parameters": {"lr": 0.04, "kind": "b"}, "state": "Running", "intermediate": [[1, float("nan")]]},
    ]
    for algorithm in ("tpe", "bayesian", "cmaes", "evolution", "auto"):
        spec = {**SPEC, "algorithm": {"name": algorithm, "seed": 1}}
        wave = suggest(spec, odd * 3, 4)
        assert len(wave) == 4
        assert not {(a["lr"], a["kind"]) for a in wave} & {(0.01, "a"), (0.02, "a"), (0.03, "a"), (0.04, "b")}


# ---------------------------------------------------------------------------- CLI


def write(tmp_path: Path, name: str, content: Any, as_yaml: bool = False) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content) if as_yaml else json.dumps(content))
    return str(path)


def test_cli_suggest_reads_a_manifest_and_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = {"apiVersion": "kubetune.io/v1alpha1", "kind": "TuningJob", "metadata": {"name": "j"}, "spec": SPEC}
    job = write(tmp_path, "job.yaml", manifest, as_yaml=True)
    history = write(tmp_path, "trials.json", [GOOD])
    assert main(["suggest", "-f", job, "--history", history, "-n", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == suggest(SPEC, [GOOD], 4) and len(printed) == 4


def test_cli_suggest_takes_a_bare_spec_and_no_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suggest", "-f", write(tmp_path, "spec.yaml", SPEC, as_yaml=True)]) == 0
    assert json.loads(capsys.readouterr().out) == suggest(SPEC, [], 1)


def test_cli_stop_prints_decisions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = [
        {**GOOD, "intermediate": [[1, 0.5], [2, 0.5]]},
        {**GOOD, "intermediate": [[1, 0.4], [2, 0.4]]},
        {"parameters": {"lr": 0.5, "kind": "b"}, "state": "Running", "intermediate": [[1, 0.9], [2, 0.9]]},
    ]
    # maxResource 3: step 2 is not the last one (by default that is the longest succeeded trial's, 2 here).
    job = write(tmp_path, "job.json", {**SPEC, "earlyStopping": {**SPEC["earlyStopping"], "maxResource": 3}})
    assert main(["stop", "-f", job, "--history", write(tmp_path, "h.json", history)]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"index": 2, "rule": "median", "step": 2.0, "value": 0.9, "threshold": 0.45}
    ]


def test_cli_reports_bad_input_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = write(tmp_path, "job.json", SPEC)
    assert main(["suggest", "-f", job, "--history", write(tmp_path, "h.json", [{"state": "x"}])]) == 2
    assert "history[0]: missing parameters" in capsys.readouterr().err
    assert main(["suggest", "-f", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_frozen_entries_answer_like_their_mappings_and_are_parsed_once() -> None:
    history: list[dict[str, Any]] = [
        {"parameters": {"lr": 0.001 * (i + 1), "kind": "ab"[i % 2]}, "state": "Succeeded", "objective": 1.0 / (i + 1),
         "intermediate": [[1, 2.0 / (i + 1)], [2, 1.0 / (i + 1)]]}
        for i in range(12)
    ] + [{"parameters": {"lr": 0.5, "kind": "a"}, "state": "Running", "intermediate": [[1, 9.0]]}]
    frozen: list[Any] = [FrozenEntry(entry) for entry in history[:-1]] + history[-1:]
    assert suggest(SPEC, frozen, 3) == suggest(SPEC, history, 3)
    assert stop(SPEC, frozen) == stop(SPEC, history) == [12]
    entry = frozen[0]
    assert dict(entry)["state"] == "Succeeded" and entry != history[0]  # equal only to itself
    with pytest.raises(TypeError):
        entry["parameters"]["lr"] = 1.0  # read-only all the way down
    # In a History's open part, parsed once per (space, goal, position): a second call reads the cache.
    history_ = History(SettledHistory(), frozen)
    before = parse_history(Space.from_spec(load_spec(SPEC)), "minimize", history_)
    again = parse_history(Space.from_spec(load_spec(SPEC)), "minimize", history_)
    assert all(a is b for a, b in zip(before[:12], again[:12], strict=True))
    assert before[12] is not again[12]  # a plain (mutable) entry is parsed on every call
    # Once settled, the same entries keep the Observations they had while open.
    for entry in frozen[:12]:
        history_.settled.append(entry)
    settled = parse_history(Space.from_spec(load_spec(SPEC)), "minimize", History(history_.settled, frozen[12:]))
    assert all(a is b for a, b in zip(before[:12], settled[:12], strict=True))
    # A malformed frozen entry is still rejected, naming it, on every call (errors are not memoised).
    bad = [FrozenEntry({"parameters": {"lr": 0.1}, "state": "Done"})]
    for _ in range(2):
        with pytest.raises(SearchError, match=r"history\[0\]\.state"):
            suggest(SPEC, bad, 1)
