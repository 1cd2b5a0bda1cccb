"""kubetune: a Kubernetes-native hyperparameter tuning operator."""

# The reporting helper for users' training code: `kubetune.report(step=..., ...)`
# and `kubetune.finish(...)`. It imports prometheus-client only (no kopf,
# kubernetes or torch). Note that these names shadow the `kubetune.report`
# submodule as an attribute; import its other names with
# `from kubetune.report import TrialReporter`.
from kubetune.report import finish, report

__version__ = "0.1.0"

__all__ = ["__version__", "finish", "report"]
