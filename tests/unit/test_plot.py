"""`kubetune plot`: rendering recorded Trial objects to a PNG, and the command around it."""

from __future__ import annotations

import argparse
import copy
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import plot
from kubetune.api.models import Trial, TuningJob
from kubetune.cli import COMMAND_MODULES, build_parser
from kubetune.plot import best_so_far, render_plot, trial_view

STUDY = Path(__file__).parent / "data" / "plot_study.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_study() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    job, *trials = yaml.safe_load_all(STUDY.read_text())
    return job, trials


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_fixture_is_valid_api_objects() -> None:
    job, trials = load_study()
    TuningJob.model_validate(job)
    phases = {Trial.model_validate(t).status.phase for t in trials}
    assert phases == {"Succeeded", "EarlyStopped", "Failed", "Running", "Pending"}


def test_renders_the_recorded_study(tmp_path: Path) -> None:
    job, trials = load_study()
    out = render_plot(job, trials, tmp_path / "study.png")
    assert out == tmp_path / "study.png"
    width, height = png_size(out)
    assert width == 1500 and height > 700  # 15 in at 100 dpi; two rows of plots
    assert out.stat().st_size > 50_000  # drawn, not blank


def test_more_parameters_make_a_taller_figure(tmp_path: Path) -> None:
    job, trials = load_study()
    _, base_height = png_size(render_plot(job, trials, tmp_path / "a.png"))
    wider = copy.deepcopy(job)
    extra = [{"name": f"p{i}", "type": "float", "min": 0, "max": 1} for i in range(5)]
    wider["spec"]["parameters"] += extra
    _, height = png_size(render_plot(wider, trials, tmp_path / "b.png"))
    assert height > base_height


def test_renders_an_empty_and_a_minimising_study(tmp_path: Path) -> None:
    job, trials = load_study()
    png_size(render_plot(job, [], tmp_path / "empty.png"))
    minimise = copy.deepcopy(job)
    minimise["spec"]["objective"] = {"metric": "val_loss", "goal": "minimize"}
    minimise["spec"]["parameters"] = []
    minimise.pop("status")
    png_size(render_plot(minimise, trials, tmp_path / "min.png"))


def test_trial_view_reads_the_status() -> None:
    _, trials = load_study()
    views = {t.index: t for t in map(trial_view, trials)}
    stopped = views[4]
    assert stopped.phase == "EarlyStopped" and stopped.stopped_at == 3.0
    assert stopped.curve[-1][0] == 3.0 and stopped.objective == stopped.curve[-1][1]
    assert views[5].phase == "Failed" and views[5].objective is None
    assert views[15].phase == "Pending" and views[15].curve == []
    assert "momentum" in views[0].parameters and "momentum" not in views[3].parameters
    broken = {"spec": {"index": 1, "parameters": {}},
              "status": {"phase": "EarlyStopped", "intermediate": [[1, 0.5], [2, None], ["x", 1], [3]]}}
    view = trial_view(broken)
    assert view.curve == [(1.0, 0.5)] and view.stopped_at == 1.0


def test_best_so_far_counts_succeeded_trials_only() -> None:
    _, trials = load_study()
    views = [trial_view(t) for t in trials]
    best = best_so_far(views, maximize=True)
    assert [i for i, _ in best] == [0, 3, 7, 10, 12]
    assert [v for _, v in best] == [0.5011, 0.9205, 0.9205, 0.9205, 0.9205]
    job, _ = load_study()
    assert best[-1][1] == job["status"]["bestTrial"]["objective"]
    assert best_so_far(views, maximize=False)[-1][1] == 0.5011


def test_plot_is_a_kubetune_command() -> None:
    assert "kubetune.plot" in COMMAND_MODULES
    args = build_parser().parse_args(["plot", "digits-asha", "-n", "team-a", "-o", "x.png"])
    assert (args.job, args.namespace, args.output) == ("digits-asha", "team-a", Path("x.png"))


def test_run_reads_the_study_and_writes_the_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    job, trials = load_study()
    calls: list[tuple[Any, ...]] = []

    def fake_read(name: str, namespace: str, kubeconfig: str | None, context: str | None) -> Any:
        calls.append((name, namespace, kubeconfig, context))
        return job, trials

    monkeypatch.setattr(plot, "read_study", fake_read)
    out = tmp_path / "digits.png"
    args = argparse.Namespace(job="digits-asha", namespace="default", output=out, kubeconfig=None, context=None)
    assert plot.run(args) == 0
    assert calls == [("digits-asha", "default", None, None)]
    assert f"wrote {out} (16 trials)" in capsys.readouterr().out
    png_size(out)


def test_run_explains_a_missing_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from kubetune.k8s.core import NotFound

    def missing(*_: Any) -> Any:
        raise NotFound(404, "NotFound", 'tuningjobs.kubetune.io "nope" not found')

    monkeypatch.setattr(plot, "read_study", missing)
    args = argparse.Namespace(job="nope", namespace="team-a", output=tmp_path / "x.png", kubeconfig=None, context=None)
    assert plot.run(args) == 1
    assert "TuningJob team-a/nope: not found" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_current_namespace_comes_from_the_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "a", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
                     {"name": "b", "context": {"cluster": "c", "user": "u"}}],
    }))
    assert plot.current_namespace(str(kubeconfig), None) == "team-a"
    assert plot.current_namespace(str(kubeconfig), "b") == "default"
    assert plot.current_namespace(str(tmp_path / "missing"), None) == "default"


def test_plot_does_not_import_matplotlib_until_it_draws() -> None:
    code = "import sys, kubetune.cli, kubetune.plot; kubetune.cli.build_parser(); print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def multi_objective_study() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The recorded study as a two-objective job: val_accuracy against a GPU-seconds cost per trial."""
    job, trials = load_study()
    job = copy.deepcopy(job)
    job["spec"]["objectives"] = [job["spec"].pop("objective"), {"metric": "kubetune:gpu_seconds", "goal": "minimize"}]
    trials = copy.deepcopy(trials)
    for trial in trials:
        status = trial.get("status") or {}
        if status.get("phase") == "Succeeded":
            status.setdefault("metrics", {})["kubetune:gpu_seconds"] = 10.0 * (trial["spec"]["index"] % 5 + 1)
    return job, trials


def test_a_multi_objective_study_gets_a_pareto_panel(tmp_path: Path) -> None:
    job, trials = multi_objective_study()
    TuningJob.model_validate(job)
    views = [trial_view(t) for t in trials]
    points, front = plot.pareto_points(plot.objectives_of(job["spec"]), views)
    succeeded = [v for v in views if v.phase == "Succeeded"]
    assert len(points) == len(succeeded) and 1 <= len(front) < len(points)
    for accuracy, cost in front:  # nobody is at least as accurate and as cheap, and better in one
        assert not any(a >= accuracy and c <= cost and (a, c) != (accuracy, cost) for a, c in points)
    for accuracy, cost in set(points) - set(front):
        assert any(a >= accuracy and c <= cost for a, c in front)
    single_width, _ = png_size(render_plot(load_study()[0], trials, tmp_path / "one.png"))
    out = render_plot(job, trials, tmp_path / "multi.png")
    assert png_size(out)[0] == single_width and out.stat().st_size > 50_000
