"""Names and labels shared by the operator, the chart, Prometheus and dashboards.

Deterministic names are what make reconcile idempotent: a trial is always
`<job>-<index>` and its n-th pod `<trial>-<n>`, so a repeated create after a
crash or a stale cache is answered 409 instead of making a duplicate.
"""

from __future__ import annotations

import re

LABEL_JOB = "kubetune.io/job"
LABEL_TRIAL = "kubetune.io/trial"
LABEL_ATTEMPT = "kubetune.io/attempt"
LABEL_SCRAPE = "kubetune.io/scrape"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubetune"
ANNOTATION_METRICS_PATH = "kubetune.io/metrics-path"
METRICS_PORT_NAME = "metrics"

# What Prometheus calls the job/trial labels after relabeling (the same names
# the Prometheus Operator's podTargetLabels produce from the pod labels).
PROM_LABEL_JOB = "kubetune_io_job"
PROM_LABEL_TRIAL = "kubetune_io_trial"

# Label values are at most 63 characters; `<job>-<index>` must fit.
MAX_JOB_NAME_LENGTH = 40

ENV_PARAM_PREFIX = "KUBETUNE_PARAM_"
ENV_PARAMS_JSON = "KUBETUNE_PARAMS"
ENV_TRIAL = "KUBETUNE_TRIAL"
ENV_JOB = "KUBETUNE_JOB"
ENV_METRICS_PORT = "KUBETUNE_METRICS_PORT"
ENV_METRICS_ADDRESS = "KUBETUNE_METRICS_ADDRESS"
ENV_TERMINATION_MESSAGE_PATH = "KUBETUNE_TERMINATION_MESSAGE_PATH"

_POD_NAME = re.compile(r"^(?P<trial>.+)-(?P<attempt>[0-9]+)$")


def trial_name(job_name: str, index: int) -> str:
    return f"{job_name}-{index}"


def pod_name(trial: str, attempt: int) -> str:
    return f"{trial}-{attempt}"


def attempt_of(pod: str) -> int | None:
    match = _POD_NAME.match(pod)
    return int(match["attempt"]) if match else None


def param_env_name(parameter: str) -> str:
    return ENV_PARAM_PREFIX + parameter.upper()
