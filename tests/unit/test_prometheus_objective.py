"""The objective from a user's PromQL (`objective.promql`) and the MetricsAvailable condition: how answers
become curves, final values and status, with the real planner and recorded Prometheus answers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_planner import NOW, make_job, pod, run, trial

from kubetune.controller.planner import Event, Observations, PatchTrialStatus, PlannerSettings
from kubetune.metrics.prometheus import PrometheusError, parse_template_result

PROMQL = 'last_over_time(my_score{kubetune_io_trial="{{trial}}"}[15m])'


def series(value: float, **labels: str) -> dict[str, object]:
    return {"metric": {"__name__": "my_score", **labels}, "value": [1764417600.0, str(value)]}


def test_a_single_series_without_step_is_the_latest_value() -> None:
    assert parse_template_result([series(0.91)], "t-0") == (None, 0.91)
    assert parse_template_result([], "t-0") == (None, None)


def test_series_by_step_are_the_curve_and_the_highest_step_is_the_latest() -> None:
    curve, latest = parse_template_result([series(0.7, step="2"), series(0.5, step="1"), series(0.8, step="3")], "t")
    assert curve == [(1.0, 0.5), (2.0, 0.7), (3.0, 0.8)] and latest == 0.8
    # A step-less series beside them is the latest value (for example a separate "final" gauge).
    assert parse_template_result([series(0.5, step="1"), series(0.6)], "t") == ([(1.0, 0.5)], 0.6)


def test_several_series_without_step_are_ambiguous_not_guessed() -> None:
    with pytest.raises(PrometheusError) as error:
        parse_template_result([series(0.5, pod="a"), series(0.6, pod="b")], "t")
    assert error.value.reason == "PromQLAmbiguous" and "aggregate" in error.value.message


def promql_job(**changes: object) -> object:
    return make_job(objective={"metric": "score", "goal": "maximize", "promql": PROMQL}, **changes)


def finished_without_message() -> tuple[list[object], list[object]]:
    job = promql_job()
    trials = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1)]
    return trials, [pod("digits-0", 1, "Succeeded", message=None)]  # finished at 11:59:30, NOW is 12:00:00


def patched(result: object, name: str = "digits-0") -> dict[str, object] | None:
    return next((a.status for a in result.of_type(PatchTrialStatus) if a.trial == name), None)  # type: ignore[attr-defined]


def test_a_trial_that_reports_only_to_prometheus_succeeds_with_the_querys_value() -> None:
    trials, pods = finished_without_message()
    answer = Observations(finals={"digits-0": {"score": 0.93}}, curves={"digits-0": [(1.0, 0.8), (2.0, 0.93)]},
                          asked=True)
    status = patched(run(promql_job(), trials, pods, observations=answer))
    assert status is not None and status["phase"] == "Succeeded" and status["objective"] == 0.93
    assert status["metrics"] == {"score": 0.93} and status["intermediate"] == [[1.0, 0.8], [2.0, 0.93]]


def test_the_users_query_wins_over_the_termination_message() -> None:
    job = promql_job()
    trials = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1)]
    message = '{"status": "completed", "metrics": {"score": 0.5}}'
    answer = Observations(finals={"digits-0": {"score": 0.93}}, asked=True)
    status = patched(run(job, trials, [pod("digits-0", 1, "Succeeded", message=message)], observations=answer))
    assert status is not None and status["objective"] == 0.93
    # Without a PromQL objective the trial's own report comes first.
    plain = make_job(objective={"metric": "score", "goal": "maximize"})
    status = patched(run(plain, trials, [pod("digits-0", 1, "Succeeded", message=message)], observations=answer))
    assert status is not None and status["objective"] == 0.5


def test_no_value_yet_waits_out_the_grace_then_fails_with_the_cause() -> None:
    trials, pods = finished_without_message()
    empty = Observations(asked=True)
    grace = PlannerSettings(final_metrics_grace_seconds=60)
    waiting = run(promql_job(), trials, pods, observations=empty, settings=grace)
    assert patched(waiting) is None and waiting.requeue_after is not None and waiting.requeue_after <= 2.0
    late = run(promql_job(), trials, pods, observations=empty, settings=PlannerSettings(final_metrics_grace_seconds=20))
    status = patched(late)
    assert status is not None and status["phase"] == "Failed" and status["reason"] == "MetricsUnavailable"
    assert "objective.promql" in str(status["message"])


def test_prometheus_down_holds_a_result_that_only_it_has() -> None:
    trials, pods = finished_without_message()
    down = Observations(problem=("PrometheusUnavailable", "connection refused"), asked=True)
    assert patched(run(promql_job(), trials, pods, observations=down,
                       settings=PlannerSettings(final_metrics_grace_seconds=60))) is None
    status = patched(run(promql_job(), trials, pods, observations=down, now=NOW + timedelta(minutes=5)))
    assert status is not None and status["reason"] == "MetricsUnavailable" and "connection refused" in str(
        status["message"])


def test_a_trial_that_crashes_keeps_the_curve_it_reported() -> None:
    job = make_job(trialTemplate={**make_job().spec.trial_template.to_wire(), "retries": 0})
    trials = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1)]
    curve = [(1.0, 0.5), (2.0, 0.6), (3.0, 0.62)]
    status = patched(run(job, trials, [pod("digits-0", 1, "Failed", exit_code=137)],
                         observations=Observations(curves={"digits-0": curve}, asked=True)))
    assert status is not None and status["phase"] == "Failed"
    assert status["intermediate"] == [list(p) for p in curve]


def metrics_condition(result: object) -> object:
    return next(c for c in result.status.conditions if c.type == "MetricsAvailable")  # type: ignore[attr-defined]


def test_metrics_available_follows_answers_only_and_each_change_is_an_event() -> None:
    job = make_job(earlyStopping={"rule": "median"})
    trials = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1)]
    pods = [pod("digits-0", 1, "Running")]
    up = run(job, trials, pods, observations=Observations(asked=True))
    assert metrics_condition(up).status == "True" and not [e for e in up.of_type(Event) if "Metrics" in e.reason]

    job.status = up.status
    down = run(job, trials, pods, observations=Observations(problem=("PrometheusUnavailable", "refused"), asked=True))
    assert metrics_condition(down).status == "False"
    [warning] = [e for e in down.of_type(Event) if "Metrics" in e.reason]
    assert warning.reason == "MetricsUnavailable" and warning.type == "Warning" and "refused" in warning.message

    # Nothing asked of Prometheus (the job's trials all finished while it was down): the condition stays False.
    job.status = down.status
    finished = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Succeeded", attempts=1, objective=0.9)]
    quiet = run(job, finished, [], observations=Observations())
    assert quiet.status is None or metrics_condition(quiet).status == "False"

    back = run(job, trials, pods, observations=Observations(asked=True))
    assert metrics_condition(back).status == "True"
    [recovered] = [e for e in back.of_type(Event) if "Metrics" in e.reason]
    assert recovered.reason == "MetricsAvailable" and recovered.type == "Normal"
    assert recovered.key != warning.key


def test_a_second_objective_from_promql_is_waited_for_then_recorded() -> None:
    job = make_job(objective=None, objectives=[
        {"metric": "val_accuracy", "goal": "maximize"},
        {"metric": "energy", "goal": "minimize",
         "promql": 'last_over_time(my_energy{kubetune_io_trial="{{trial}}"}[15m])'},
    ])
    trials = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1)]
    pods = [pod("digits-0", 1, "Succeeded", message='{"status": "completed", "metrics": {"val_accuracy": 0.9}}')]
    grace = PlannerSettings(final_metrics_grace_seconds=60)
    waiting = run(job, trials, pods, observations=Observations(asked=True), settings=grace)
    assert patched(waiting) is None and waiting.requeue_after is not None  # the primary is there, energy is not
    answered = Observations(finals={"digits-0": {"energy": 120.0}}, asked=True)
    status = patched(run(job, trials, pods, observations=answered, settings=grace))
    assert status is not None and status["phase"] == "Succeeded" and status["reason"] == "Completed"
    assert status["metrics"] == {"val_accuracy": 0.9, "energy": 120.0}
    late = patched(run(job, trials, pods, observations=Observations(asked=True),
                       settings=PlannerSettings(final_metrics_grace_seconds=20)))
    assert late is not None and late["phase"] == "Succeeded" and late["reason"] == "ObjectivesIncomplete"
    assert "'energy'" in str(late["message"]) and "promql" in str(late["message"])
