"""Bayesian optimisation with a Gaussian process (numpy/scipy only).

Model: a Matern 5/2 kernel with one lengthscale per parameter on the unit
encoding of `Space` (log-scaled parameters are already linear there);
categorical parameters contribute a Hamming distance (0 or 1, scaled by their
own lengthscale), so no one-hot columns are needed. Inactive conditional
parameters sit at a fixed coordinate. Hyperparameters (inverse squared
lengthscales, amplitude, noise) are the MAP estimate under Optuna GPSampler's
priors, found by L-BFGS-B from a fixed start with analytic gradients, so a
call is deterministic.

Startup: until `nStartupTrials` usable trials exist, points of a randomly
shifted R_d low-discrepancy sequence (trial i gets point i).

Targets: losses are rank-preserving warped (see `_warp`) then standardised.
Acquisition: log expected improvement (or UCB / PI), maximised over random
candidates, perturbations of the best observed points and a few rounds of
shrinking local search around the best candidates, all snapped to
representable values.

Waves: Pending/Running trials and the wave's earlier picks are "running"
points; the next pick maximises the batch acquisition given them (see
`_acquisition`), so parallel suggestions spread out instead of piling onto
the current optimum of the acquisition.

Training set: at most `MAX_TRAINING_POINTS` observations (the best half by
loss plus the most recent ones), so a suggestion stays well under a second
however long the history grows; cost is O(n^3) in that number.

scipy is imported inside the functions that use it: an operator that never runs `bayesian` starts
without it (about 40 MiB of resident memory).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterator

import numpy as np

from kubetune.api.models import BayesianSettings
from kubetune.search._context import Context
from kubetune.search._history import Observation
from kubetune.search._space import Assignment, FloatArray, Space

MAX_TRAINING_POINTS = 200
_SQRT5 = math.sqrt(5.0)
_JITTER = 1e-9
FANTASIES = 32
# Log prior -(A / w + B * w) on each inverse squared lengthscale w (Optuna's: A = B = 0.1, mode w = 1).
PRIOR_A = 0.1
PRIOR_B = 0.1
MAX_RUNNING_POINTS = 64  # the most recent in-flight points a suggestion accounts for
_MIN_NOISE = 1e-6
_LOG_BOUNDS_W = (math.log(1e-4), math.log(1e4))
_LOG_BOUNDS_AMP = (math.log(1e-2), math.log(1e2))
_LOG_BOUNDS_NOISE = (math.log(_MIN_NOISE), math.log(1.0))


def _matern(s: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Matern 5/2 as a function of the squared scaled distance s, and its derivative d/ds."""
    r = np.sqrt(s)
    e = np.exp(-_SQRT5 * r)
    value = (1.0 + _SQRT5 * r + (5.0 / 3.0) * s) * e
    derivative = -(5.0 / 6.0) * (1.0 + _SQRT5 * r) * e
    return value, derivative


def _scaled_sqdist(a: FloatArray, b: FloatArray, w: FloatArray, categorical: np.ndarray) -> FloatArray:
    """sum_d w_d * delta_d(a, b)^2 for every pair of rows; delta is Hamming on categorical columns."""
    numeric = ~categorical
    sw = np.sqrt(w[numeric])
    an, bn = a[:, numeric] * sw, b[:, numeric] * sw
    s: FloatArray = (an * an).sum(1)[:, None] + (bn * bn).sum(1)[None, :] - 2.0 * an @ bn.T
    np.maximum(s, 0.0, out=s)
    for d in np.flatnonzero(categorical):
        s += w[d] * (a[:, d][:, None] != b[:, d][None, :])
    return s


class GaussianProcess:
    """A GP fitted to encoded rows and standardised targets."""

    def __init__(self, x: FloatArray, y: FloatArray, categorical: np.ndarray) -> None:
        from scipy import linalg
        self.categorical = categorical
        self.w, self.amplitude, self.noise = _fit(x, y, categorical)
        self.x = x
        self.y = y
        k = self.kernel(x, x)
        k[np.diag_indices_from(k)] += self.noise + _JITTER
        self.chol = linalg.cholesky(k, lower=True, check_finite=False)
        self.alpha = linalg.cho_solve((self.chol, True), y, check_finite=False)

    def kernel(self, a: FloatArray, b: FloatArray) -> FloatArray:
        return self.amplitude * _matern(_scaled_sqdist(a, b, self.w, self.categorical))[0]

    def posterior(self, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Posterior mean and the whitened cross-covariance V = L^-1 k(X, rows) (for covariances)."""
        from scipy import linalg
        k = self.kernel(rows, self.x)
        v = linalg.solve_triangular(self.chol, k.T, lower=True, check_finite=False)
        return k @ self.alpha, v

    def predict(self, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Posterior mean and standard deviation of the latent function."""
        mean, v = self.posterior(rows)
        return mean, np.sqrt(np.maximum(self.amplitude - (v * v).sum(0), 1e-12))


def _fit(x: FloatArray, y: FloatArray, categorical: np.ndarray) -> tuple[FloatArray, float, float]:
    """MAP kernel hyperparameters (Optuna GPSampler's priors) by L-BFGS-B."""
    from scipy import linalg, optimize
    n, dims = x.shape
    deltas = np.empty((dims, n, n))
    for d in range(dims):
        column = x[:, d]
        if categorical[d]:
            deltas[d] = column[:, None] != column[None, :]
        else:
            deltas[d] = (column[:, None] - column[None, :]) ** 2
    eye = np.eye(n)
    half_log_2pi = 0.5 * n * math.log(2 * math.pi)

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        w = np.exp(theta[:dims])
        amplitude, noise = math.exp(theta[dims]), math.exp(theta[dims + 1])
        s = np.tensordot(w, deltas, axes=1)
        m, dm = _matern(s)
        k = amplitude * m + (noise + _JITTER) * eye
        try:
            chol = linalg.cholesky(k, lower=True, check_finite=False)
        except linalg.LinAlgError:
            return 1e25, np.zeros_like(theta)
        alpha = linalg.cho_solve((chol, True), y, check_finite=False)
        k_inv = linalg.cho_solve((chol, True), eye, check_finite=False)
        nll = 0.5 * float(y @ alpha) + float(np.log(np.diag(chol)).sum()) + half_log_2pi
        big_w = k_inv - np.outer(alpha, alpha)
        grad = np.empty_like(theta)
        grad[:dims] = 0.5 * amplitude * w * np.einsum("ij,dij->d", big_w * dm, deltas)
        grad[dims] = 0.5 * amplitude * float((big_w * m).sum())
        grad[dims + 1] = 0.5 * noise * float(np.trace(big_w))
        log_prior = float(-(PRIOR_A / w + PRIOR_B * w).sum()) + (math.log(amplitude) - amplitude)
        log_prior += 0.1 * math.log(noise) - 30.0 * noise
        grad[:dims] -= PRIOR_A / w - PRIOR_B * w
        grad[dims] -= 1.0 - amplitude
        grad[dims + 1] -= 0.1 - 30.0 * noise
        return nll - log_prior, grad

    start = np.concatenate([np.zeros(dims), [0.0, math.log(0.01)]])
    bounds = [_LOG_BOUNDS_W] * dims + [_LOG_BOUNDS_AMP, _LOG_BOUNDS_NOISE]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = optimize.minimize(
            objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 200}
        )
    theta = result.x if np.all(np.isfinite(result.x)) else start
    return np.exp(theta[:dims]), math.exp(theta[dims]), math.exp(theta[dims + 1])


def _log_h(z: FloatArray) -> FloatArray:
    """log(phi(z) + z * Phi(z)), stable for very negative z (log EI = log sigma + log_h)."""
    from scipy import special
    out = np.empty_like(z)
    upper = z > -1.0
    zu = z[upper]
    out[upper] = np.log(np.exp(-0.5 * zu * zu) / math.sqrt(2 * math.pi) + zu * special.ndtr(zu))
    zl = np.maximum(z[~upper], -1e6)
    ratio = math.sqrt(math.pi / 2) * special.erfcx(-zl / math.sqrt(2))  # Phi(z) / phi(z)
    out[~upper] = -0.5 * zl * zl - 0.5 * math.log(2 * math.pi) + np.log1p(np.maximum(zl * ratio, -1 + 1e-300))
    return out


def _acquisition(
    gp: GaussianProcess, kind: str, running: FloatArray, rng: np.random.Generator
) -> Callable[[FloatArray], FloatArray]:
    """Acquisition (higher is better) of one more point given the `running` ones.

    With running points (Pending/Running trials and the wave's earlier picks)
    this is the greedy step of batch acquisition, as Optuna's qLogEI: draw
    FANTASIES joint samples of the running points' values, and average over
    them the acquisition of the candidate conditioned on each sample, with the
    incumbent lowered to the best fantasised value. The conditional part is
    exact (Gaussian), so a candidate next to a running point, whose value is
    then all but known, gains nothing. Without running points it is plain
    log EI / log PI / UCB on the posterior.
    """
    from scipy import linalg, special
    best = float(gp.y.min())
    dims = gp.x.shape[1]
    beta = math.sqrt(0.2 * dims * math.log(2.0 * max(len(gp.y), 2)))
    if len(running):
        mean_r, v_r = gp.posterior(running)
        cov_r = gp.kernel(running, running) - v_r.T @ v_r
        cov_r[np.diag_indices_from(cov_r)] += 1e-6 * gp.amplitude
        chol_r = _safe_cholesky(cov_r)
        z = rng.standard_normal((len(running), FANTASIES))
        incumbents = np.minimum(best, (mean_r[:, None] + chol_r @ z).min(0))  # (S,)
    else:
        chol_r = np.zeros((0, 0))
        z = np.zeros((0, 1))
        incumbents = np.array([best])

    def score(rows: FloatArray) -> FloatArray:
        mean, v = gp.posterior(rows)
        variance = gp.amplitude - (v * v).sum(0)
        means = mean[:, None]
        if len(running):
            cross = gp.kernel(rows, running) - v.T @ v_r  # posterior cov(candidate, running)
            w = linalg.solve_triangular(chol_r, cross.T, lower=True, check_finite=False)
            variance = variance - (w * w).sum(0)
            means = mean[:, None] + w.T @ z  # conditional means, one column per fantasy
        std = np.sqrt(np.maximum(variance, 1e-12))[:, None]
        if kind == "ucb":
            return np.asarray(-(means - beta * std).mean(1))
        zs = (incumbents[None, :] - means) / std
        logs = special.log_ndtr(zs) if kind == "pi" else np.log(std) + _log_h(zs)
        return np.asarray(special.logsumexp(logs, axis=1) - math.log(logs.shape[1]))

    return score


def _safe_cholesky(matrix: FloatArray) -> FloatArray:
    from scipy import linalg
    try:
        return np.asarray(linalg.cholesky(matrix, lower=True, check_finite=False))
    except linalg.LinAlgError:  # numerically indefinite: a square root from the eigen decomposition
        values, vectors = np.linalg.eigh(matrix)
        return np.asarray(vectors * np.sqrt(np.maximum(values, 0.0)))


def _warp(losses: FloatArray) -> FloatArray:
    """Standardised targets; heavy right tails (a few terrible trials) are log-compressed first."""
    y = losses - losses.min()
    spread = np.median(y)
    if spread > 0 and y.max() > 20 * spread:  # skewed: compress so the good region gets resolution
        y = np.log1p(y / spread)
    std = float(y.std())
    standardised: FloatArray = (y - y.mean()) / (std if std > 0 else 1.0)
    return standardised


def _training_set(usable: list[Observation]) -> list[Observation]:
    if len(usable) <= MAX_TRAINING_POINTS:
        return usable
    by_loss = sorted(usable, key=lambda o: (o.loss, o.index))
    chosen = {o.index for o in by_loss[: MAX_TRAINING_POINTS // 2]}
    for o in reversed(usable):
        if len(chosen) >= MAX_TRAINING_POINTS:
            break
        chosen.add(o.index)
    return [o for o in usable if o.index in chosen]


def _maximise(
    space: Space, score: Callable[[FloatArray], FloatArray], anchors: FloatArray, rng: np.random.Generator
) -> FloatArray:
    """Rows sorted by decreasing acquisition: random + around anchors, then local refinement."""
    dims = len(space)
    numeric = ~space.categorical_mask
    flip = min(0.5, 1.0 / max(dims, 1))

    def perturb(base: FloatArray, count: int, sigma: float) -> FloatArray:
        rows = np.repeat(base, count, axis=0)
        rows[:, numeric] += rng.normal(0.0, sigma, (len(rows), int(numeric.sum())))
        for d in np.flatnonzero(space.categorical_mask):
            change = rng.random(len(rows)) < flip
            rows[change, d] = rng.integers(0, len(space.dimensions[d].values), int(change.sum()))
        return space.repair(rows, rng)

    pools = [space.random_rows(rng, 1000)]
    if len(anchors):
        pools.append(perturb(anchors, max(1, 300 // len(anchors)), 0.1))
    pool = np.vstack(pools)
    values = score(pool)
    order = np.argsort(-values, kind="stable")
    starts, start_values = pool[order[:8]].copy(), values[order[:8]].copy()
    extra_rows, extra_values = [], []
    for sigma in (0.05, 0.02, 0.008, 0.003):
        trial = perturb(starts, 24, sigma)
        trial_values = score(trial).reshape(len(starts), 24)
        best = trial_values.argmax(1)
        for i, j in enumerate(best):
            if trial_values[i, j] > start_values[i]:
                starts[i], start_values[i] = trial[i * 24 + j], trial_values[i, j]
        extra_rows.append(trial)
        extra_values.append(trial_values.ravel())
    all_rows = np.vstack([pool, *extra_rows])
    all_values = np.concatenate([values, *extra_values])
    return all_rows[np.argsort(-all_values, kind="stable")]


def startup_points(ctx: Context) -> Iterator[Assignment]:
    """A randomly shifted R_d low-discrepancy sequence (Roberts 2018): trial i gets point i.

    Stateless (point i is frac(shift + i * alpha)) and spread evenly however
    many points a job ends up using.
    """
    space = ctx.space
    dims = len(space)
    phi = 2.0
    for _ in range(30):  # the unique positive root of x^(d+1) = x + 1
        phi = (1.0 + phi) ** (1.0 / (dims + 1))
    alpha = (1.0 / phi) ** np.arange(1, dims + 1)
    shift = np.random.default_rng([ctx.seed, 0x5EED]).random(dims)
    for i in itertools.count(len(ctx.observations)):
        u = (shift + i * alpha) % 1.0
        result: Assignment = {}
        for value, dim in zip(u, space.dimensions, strict=True):
            if space.is_active(dim, result):
                result[dim.name] = dim.from_unit(float(value))
        yield result


def propose_gp(ctx: Context, settings: BayesianSettings) -> Iterator[Assignment]:
    """GP suggestions one at a time, each accounting for the in-flight points and earlier picks."""
    usable = ctx.usable
    if len(usable) < max(settings.n_startup_trials, 2) or len({o.key for o in usable}) < 2:
        yield from startup_points(ctx)
        return
    space = ctx.space
    training = _training_set(usable)
    x = np.array([space.encode(o.parameters or {}) for o in training])
    y = _warp(np.array([o.loss for o in training], dtype=float))
    gp = GaussianProcess(x, y, space.categorical_mask)
    running = [space.encode(a) for a in ctx.in_flight()[-MAX_RUNNING_POINTS:]]
    anchors = x[np.argsort(y, kind="stable")[:5]]
    draw = 0
    while True:
        rows_running = np.array(running).reshape(-1, len(space))
        score = _acquisition(gp, settings.acquisition, rows_running, ctx.rng("fantasies", draw))
        rows = _maximise(space, score, anchors, ctx.rng("gp", draw))
        draw += 1
        chosen = None
        for row in rows:
            assignment = space.decode(row)
            if space.key(assignment) not in ctx.taken:
                chosen = (row, assignment)
                break
        if chosen is None:  # every candidate is taken: let the wave filler fall back
            return
        yield chosen[1]
        running = (running + [chosen[0]])[-MAX_RUNNING_POINTS:]
