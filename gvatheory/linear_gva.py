r"""Gradient variance amplification (GVA) in a linear closed loop, exactly and by Monte Carlo.

Serves Block et al. (ICLR 2024, arXiv 2310.11428), Sec. 3: behavior cloning of a linear expert
by minibatch SGD. The one-step imitation loss is a quadratic in the gain :math:`K` whose
fluctuation under SGD noise stays small, while the rollout cost :math:`J_H(K)` depends on
:math:`K` through matrix powers :math:`(A + BK)^h` and amplifies the same fluctuation
exponentially in :math:`H` when the closed loop is (nearly) marginally stable. An EMA of the
iterates removes most of it.

The problem itself (plant, expert, demonstrations, :math:`\mathrm{loss}_{bc}` and the exact
rollout cost :math:`J_H`, computed by doubling) is :class:`LinearBC`, defined in
``gvatheory._linear_bc`` and re-exported here; see its docstring for the model.

Predictions. The mean gradient :math:`2(K - \bar K)S_{xx}` is exactly linear, so the mean of
:math:`K_t` is exact; its covariance is the linear-noise (Lyapunov) prediction, with the
minibatch noise covariance :math:`C/b` taken at :math:`\bar K`,

.. math::
    V_{t+1} = F_t V_t F_t^\top + \eta_t^2 C / b, \qquad F_t = I - \eta_t\,\mathcal H, \qquad
    \mathcal H = 2\, I_m \otimes S_{xx} \ (\text{row-major } \mathrm{vec}\,K),

jointly with the EMA; for constant :math:`\eta, \gamma` the stationary covariance solves a
discrete Lyapunov equation (both through :mod:`gvatheory.moments`). The delta method turns it into
:math:`\mathbb E J_H \approx J_H(\mu) + \tfrac12\mathrm{tr}(\nabla^2 J_H V)`,
:math:`\mathrm{Var}\,J_H \approx \nabla J_H^\top V \nabla J_H + \tfrac12\mathrm{tr}((\nabla^2 J_H V)^2)`,
with the gradient by complex step and the Hessian by complex step + central differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import check_int, check_matrix, check_memory, check_range
from ._linear_bc import Cost, LinearBC, double_integrator
from .moments import sgd_ema_path, sgd_ema_stationary
from .schedules import Schedule, as_schedule
from .stabilizers import ema_update
from .stats import SeedLike, chain_keys

__all__ = [
    "LinearBC",
    "Cost",
    "double_integrator",
    "MomentPrediction",
    "predict_moments",
    "stationary_moments",
    "DeltaMethod",
    "delta_method",
    "SGDRun",
    "run_sgd",
    "sgd_reference",
    "GVAExperiment",
    "gva_experiment",
]


# ------------------------------------------------------------------------ predictions


@dataclass(frozen=True)
class MomentPrediction:
    r"""Linear-noise prediction of the law of :math:`(K_t, \bar K^{ema}_t)` at step ``step``.

    ``mean_raw``/``mean_ema`` are (m, n) (exact); ``cov_raw``/``cov_ema`` are (mn, mn) in row-major
    vec K (the Lyapunov / linear-noise approximation, noise at :math:`\bar K`).
    """

    step: int
    mean_raw: np.ndarray
    mean_ema: np.ndarray
    cov_raw: np.ndarray
    cov_ema: np.ndarray


def _schedules(eta: float | Schedule, gamma: float | Schedule, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``eta_t`` for t < steps and ``gamma_{t+1}``, the EMA weight of step t (both (steps,))."""
    eta_s, gamma_s = as_schedule(eta, kind="eta"), as_schedule(gamma, kind="gamma")
    if steps == 0:
        return np.zeros(0), np.zeros(0)
    return np.atleast_1d(eta_s(np.arange(steps))), np.atleast_1d(gamma_s(np.arange(1, steps + 1)))


def _check_stable(problem: LinearBC, eta: float | Schedule, etas: np.ndarray, allow_divergent: bool) -> None:
    r"""SGD on :math:`\mathrm{loss}_{bc}` diverges once :math:`\eta_t\lambda_{max}(\mathcal H) \ge 2`."""
    if allow_divergent or etas.size == 0:
        return
    lam = float(np.linalg.eigvalsh(problem.hessian()).max())
    if etas.max() * lam >= 2.0:
        name = "eta" if isinstance(eta, (int, float, np.number)) else "eta_t"
        raise ValueError(
            f"{name}={etas.max():g} is out of range: SGD on loss_bc diverges unless "
            f"eta * lambda_max(H_bc) < 2, i.e. eta in (0, {2.0 / lam:.4g})"
        )


def predict_moments(
    problem: LinearBC,
    *,
    eta: float | Schedule,
    gamma: float | Schedule,
    batch_size: int,
    steps: int,
    init=None,
    allow_divergent: bool = False,
) -> MomentPrediction:
    r"""Iterate the mean and linear-noise covariance of :math:`(K_t, \bar K^{ema}_t)` for ``steps`` steps.

    .. math::
        Z_{t+1} = \mathcal T_t Z_t + \mathcal G_t \xi_t, \quad
        \mathcal T_t = \begin{pmatrix} F_t & 0 \\ \gamma_{t+1} F_t & (1-\gamma_{t+1}) I \end{pmatrix},
        \quad \mathcal G_t = -\eta_t \begin{pmatrix} I \\ \gamma_{t+1} I \end{pmatrix},
        \quad \mathrm{Cov}\,\xi_t = C/b,

    with :math:`Z = (\mathrm{vec}(K - \bar K), \mathrm{vec}(\bar K^{ema} - \bar K))`,
    :math:`Z_0 = (K_0 - \bar K, K_0 - \bar K)` deterministic (:func:`gvatheory.moments.sgd_ema_path`).
    An unstable step size raises ``ValueError`` unless ``allow_divergent``; then the moments
    overflow to ``inf``.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    steps = check_int("steps", steps, 0)
    check_memory("steps", steps, 32)
    etas, gammas = _schedules(eta, gamma, steps)
    _check_stable(problem, eta, etas, allow_divergent)
    Kb = problem.K_bar()
    K0 = problem.K_star if init is None else check_matrix("init", init, Kb.shape)
    C = problem.gradient_noise_cov() / batch_size
    d = Kb.size
    z0 = np.concatenate([(K0 - Kb).reshape(-1)] * 2)
    z, P = sgd_ema_path(problem.hessian(), C, etas, gammas[None, :], z0, [steps])[steps]
    z, P = np.where(np.isfinite(z), z, np.inf), np.where(np.isfinite(P), P, np.inf)
    return MomentPrediction(
        step=steps,
        mean_raw=Kb + z[:d].reshape(Kb.shape),
        mean_ema=Kb + z[d:].reshape(Kb.shape),
        cov_raw=P[:d, :d],
        cov_ema=P[d:, d:],
    )


def stationary_moments(problem: LinearBC, *, eta: float, gamma: float, batch_size: int) -> MomentPrediction:
    r"""Stationary law for constant :math:`\eta, \gamma`: :math:`P = \mathcal T P \mathcal T^\top +
    \mathcal G (C/b) \mathcal G^\top` solved by :func:`scipy.linalg.solve_discrete_lyapunov`.

    Raises ``ValueError`` when SGD is unstable (spectral radius of :math:`I - \eta\mathcal H` >= 1).
    """
    eta = float(check_range("eta", eta, 0.0, np.inf, low_open=True))
    gamma = float(check_range("gamma", gamma, 0.0, 1.0, low_open=True))
    batch_size = check_int("batch_size", batch_size, 1)
    Hs = problem.hessian()
    d = Hs.shape[0]
    radius = np.abs(np.linalg.eigvals(np.eye(d) - eta * Hs)).max()
    if radius >= 1:
        limit = 2 / np.linalg.eigvalsh(Hs).max()
        raise ValueError(f"eta={eta:g} makes SGD on loss_bc unstable: must be in (0, {limit:.4g})")
    P = sgd_ema_stationary(Hs, problem.gradient_noise_cov() / batch_size, eta, np.array([gamma]))
    Kb = problem.K_bar()
    return MomentPrediction(step=-1, mean_raw=Kb, mean_ema=Kb, cov_raw=P[:d, :d], cov_ema=P[d:, d:])


@dataclass(frozen=True)
class DeltaMethod:
    r"""Delta-method law of :math:`J_H(K)` for :math:`\mathrm{vec} K \sim (\mu, V)`, per horizon."""

    H: np.ndarray
    mean: np.ndarray
    var_first: np.ndarray
    var: np.ndarray

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(self.var)


def delta_method(problem: LinearBC, mean, cov, H) -> DeltaMethod:
    r"""Second-order delta method for :math:`J_H` at :math:`K \sim (\mu, V)`, Gaussian :math:`K`:
    :math:`\mathbb E J \approx J(\mu) + \tfrac12 \mathrm{tr}(\nabla^2 J\, V)`,
    :math:`\mathrm{Var} J \approx g^\top V g + \tfrac12 \mathrm{tr}((\nabla^2 J\, V)^2)`
    (``var_first`` keeps only :math:`g^\top V g`)."""
    Hs = np.array([check_int("H", h, 1) for h in np.atleast_1d(H)])
    cov = np.asarray(cov, dtype=float)
    if not (np.isfinite(cov).all() and np.isfinite(np.asarray(mean, dtype=float)).all()):  # moments of a divergent SGD
        inf = np.full(len(Hs), np.inf)
        return DeltaMethod(H=Hs, mean=inf, var_first=inf, var=inf)
    out = np.empty((3, len(Hs)))
    for k, h in enumerate(Hs):
        J, g, Hj = problem.cost_derivatives(mean, int(h))
        HV = Hj @ cov
        first = g @ cov @ g
        out[:, k] = J + 0.5 * np.trace(HV), first, first + 0.5 * np.trace(HV @ HV)
    return DeltaMethod(H=Hs, mean=out[0], var_first=out[1], var=out[2])


# ------------------------------------------------------------------------ Monte Carlo SGD


@dataclass(frozen=True)
class SGDRun:
    r"""Gains along training for ``S`` SGD chains: ``K`` and ``ema`` are (S, R, m, n) at ``steps`` (R,).

    ``diverged`` (S,) marks chains whose gain overflowed (SGD unstable at this step size); their
    gains hold inf/NaN and every cost or loss computed from them is ``inf``.
    """

    steps: np.ndarray
    K: np.ndarray
    ema: np.ndarray
    eta: Schedule
    gamma: Schedule
    batch_size: int
    diverged: np.ndarray


_CHUNK = 256  # steps of random draws per chain at once; fixed so results never depend on memory


def _chain_rngs(seed: SeedLike, chains: int) -> list[np.random.Generator]:
    return [np.random.default_rng(int(k)) for k in chain_keys(seed, chains)]


def _record_steps(steps: int, record_every: int) -> np.ndarray:
    """Recorded steps ``0, record_every, ...`` and the last step."""
    return np.unique(np.r_[np.arange(0, steps + 1, record_every), steps])


def _check_run_memory(
    problem: LinearBC, *, steps: int, chains: int, batch_size: int, record_every: int, n_horizons: int = 0
) -> None:
    """Refuse a run whose arrays cannot fit: per recorded iterate and chain the gain and its EMA
    (and, for an experiment, their costs, overflow flags and losses); per chain a chunk of draws."""
    per_record = 16 * problem.m * problem.n + n_horizons * 18 + (16 if n_horizons else 0)
    n_rec = steps // record_every + 2
    draws = 16 * min(_CHUNK, max(steps, 1)) * batch_size * (problem.n + problem.m)
    # steps and batch_size with the fewest chains that make sense (2), then chains with them as given
    check_memory("steps", steps, 32 + 2 * per_record / record_every)
    check_memory("batch_size", batch_size, 2 * 16 * min(_CHUNK, max(steps, 1)) * (problem.n + problem.m))
    check_memory("chains", chains, n_rec * per_record + draws, fixed=32 * steps)


def run_sgd(
    problem: LinearBC,
    *,
    eta: float | Schedule,
    gamma: float | Schedule,
    batch_size: int,
    steps: int,
    chains: int,
    seed: SeedLike = 0,
    record_every: int = 1,
    init=None,
    quiet: bool = True,
    allow_divergent: bool = False,
) -> SGDRun:
    r"""Minibatch SGD on :math:`\mathrm{loss}_{bc}` with an EMA, vectorized over ``chains`` chains.

    Chain ``i`` draws its minibatches (with replacement) from its own generator keyed by
    :func:`gvatheory.stats.chain_keys`, so its path does not depend on how many chains run.
    ``init`` is :math:`K_0` (default the expert gain :math:`K^\star`). Records steps
    ``0, record_every, ...`` and the last step. An unstable step size
    (:math:`\eta_t\lambda_{max}(\mathcal H) \ge 2`) raises ``ValueError`` unless
    ``allow_divergent``; then overflowing chains are flagged in ``diverged``.
    """
    from tqdm.auto import tqdm

    eta_s, gamma_s = as_schedule(eta, kind="eta"), as_schedule(gamma, kind="gamma")
    batch_size = check_int("batch_size", batch_size, 1)
    steps = check_int("steps", steps, 0)
    chains = check_int("chains", chains, 1)
    record_every = check_int("record_every", record_every, 1)
    _check_run_memory(problem, steps=steps, chains=chains, batch_size=batch_size, record_every=record_every)
    etas, gammas = _schedules(eta_s, gamma_s, steps)
    _check_stable(problem, eta, etas, allow_divergent)
    K0 = problem.K_star if init is None else check_matrix("init", init, problem.K_star.shape)
    rngs = _chain_rngs(seed, chains)
    rec = _record_steps(steps, record_every)
    K = np.broadcast_to(K0, (chains,) + K0.shape).copy()
    ema = K.copy()
    out_K = np.empty((chains, len(rec)) + K0.shape)
    out_E = np.empty_like(out_K)
    out_K[:, 0], out_E[:, 0] = K, ema
    r = 1
    with (
        tqdm(total=steps, disable=quiet, desc="linear-gva SGD", unit="step") as bar,
        np.errstate(over="ignore", invalid="ignore"),
    ):  # divergence is flagged below
        for start in range(0, steps, _CHUNK):
            c = min(_CHUNK, steps - start)
            draws = [problem.sample(g, (c, batch_size)) for g in rngs]
            X = np.stack([d[0] for d in draws], axis=1)  # (c, S, b, n)
            U = np.stack([d[1] for d in draws], axis=1)  # (c, S, b, m)
            for i in range(c):
                t = start + i
                resid = np.einsum("smn,sbn->sbm", K, X[i]) - U[i]
                K = K - etas[t] * (2.0 / batch_size) * np.einsum("sbm,sbn->smn", resid, X[i])
                ema = ema_update(ema, K, gammas[t])
                if r < len(rec) and rec[r] == t + 1:
                    out_K[:, r], out_E[:, r] = K, ema
                    r += 1
            bar.update(c)
    diverged = ~np.isfinite(out_K).all(axis=(1, 2, 3))
    return SGDRun(steps=rec, K=out_K, ema=out_E, eta=eta_s, gamma=gamma_s, batch_size=batch_size, diverged=diverged)


def sgd_reference(
    problem: LinearBC,
    *,
    eta: float | Schedule,
    gamma: float | Schedule,
    batch_size: int,
    steps: int,
    seed: SeedLike = 0,
    chain: int = 0,
    init=None,
) -> tuple[np.ndarray, np.ndarray]:
    """One chain of :func:`run_sgd` as a plain loop (same random draws): final ``(K, ema)``."""
    eta_s, gamma_s = as_schedule(eta, kind="eta"), as_schedule(gamma, kind="gamma")
    rng = _chain_rngs(seed, chain + 1)[chain]
    K = (problem.K_star if init is None else np.asarray(init, dtype=float)).copy()
    ema = K.copy()
    for start in range(0, steps, _CHUNK):
        c = min(_CHUNK, steps - start)
        X, U = problem.sample(rng, (c, batch_size))
        for i in range(c):
            t = start + i
            grad = np.zeros_like(K)
            for x, u in zip(X[i], U[i]):
                grad += 2.0 * np.outer(K @ x - u, x) / batch_size
            K = K - eta_s(t) * grad
            ema = ema_update(ema, K, gamma_s(t + 1))
    return K, ema


# ------------------------------------------------------------------------ experiment


@dataclass(frozen=True)
class GVAExperiment:
    r"""Monte Carlo of SGD + EMA next to the predictions, along training and across horizons.

    Arrays over horizons ``H`` (length k) and recorded ``steps`` (length R). ``J_raw``/``J_ema``:
    exact :math:`J_H` of every chain's iterate, (S, R, k) (``inf`` where ``overflow``);
    ``loss_raw``/``loss_ema``: exact :math:`\mathrm{loss}_{bc}`, (S, R). ``pred_raw``/``pred_ema``:
    delta-method laws of :math:`J_H` at the last step; ``moments``: the predicted law of the gains.
    """

    problem: LinearBC
    run: SGDRun
    H: np.ndarray
    J_raw: np.ndarray
    J_ema: np.ndarray
    overflow_raw: np.ndarray
    overflow_ema: np.ndarray
    loss_raw: np.ndarray
    loss_ema: np.ndarray
    moments: MomentPrediction
    pred_raw: DeltaMethod
    pred_ema: DeltaMethod

    def final_sd(self, which: str = "raw") -> tuple[np.ndarray, np.ndarray]:
        r"""Across-seed sd of :math:`J_H` at the last step and its standard error, per horizon.

        The SE is the delta-method SE of the sd, :math:`\mathrm{se}(\hat v)/(2\hat\sigma)`, with
        :math:`\mathrm{se}(\hat v)` the standard error of the mean of squared deviations (valid
        for any finite fourth moment; ``inf`` sd where a chain overflowed).
        """
        J = (self.J_raw if which == "raw" else self.J_ema)[:, -1]
        S = J.shape[0]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # huge costs give inf, not NaN
            dev2 = (J - J.mean(axis=0)) ** 2
            sd = np.sqrt(dev2.sum(axis=0) / (S - 1))
            se = dev2.std(axis=0, ddof=1) / np.sqrt(S) / (2 * sd)
        finite = np.isfinite(J).all(axis=0)
        sd = np.where(finite, sd, np.inf)
        se = np.where(finite & np.isfinite(sd), se, np.inf)
        return sd, se

    def loss_cv(self, which: str = "raw") -> float:
        """sd/mean of :math:`\\mathrm{loss}_{bc}` across chains at the last step."""
        L = (self.loss_raw if which == "raw" else self.loss_ema)[:, -1]
        if not np.isfinite(L).all():  # a diverged chain
            return float("inf")
        with np.errstate(over="ignore", invalid="ignore"):  # huge losses: the sd overflows to inf
            cv = float(L.std(ddof=1) / L.mean())
        return cv if np.isfinite(cv) else float("inf")

    def rows(self) -> list[dict]:
        sd_r, se_r = self.final_sd("raw")
        sd_e, se_e = self.final_sd("ema")
        with np.errstate(divide="ignore", invalid="ignore"):  # both sds overflowed: the ratio is unknown, inf
            ratio = np.where(np.isinf(sd_r), np.inf, sd_r / sd_e)
        return [
            {
                "H": int(h),
                "sd J raw": sd_r[k],
                "se": se_r[k],
                "pred raw": self.pred_raw.sd[k],
                "sd J ema": sd_e[k],
                "se ema": se_e[k],
                "pred ema": self.pred_ema.sd[k],
                "raw/ema": ratio[k],
                "overflow": int(self.overflow_raw[:, -1, k].sum()),
            }
            for k, h in enumerate(self.H)
        ]


def gva_experiment(
    problem: LinearBC,
    *,
    eta: float | Schedule,
    gamma: float | Schedule,
    batch_size: int,
    steps: int,
    chains: int,
    H,
    seed: SeedLike = 0,
    record_every: int | None = None,
    init=None,
    quiet: bool = True,
    allow_divergent: bool = False,
) -> GVAExperiment:
    """Run :func:`run_sgd`, evaluate exact J_H and loss_bc at every recorded iterate, and predict.

    ``chains >= 2`` (the spread across chains is the quantity of interest). An unstable step size
    raises ``ValueError`` unless ``allow_divergent``; then diverged chains give ``inf`` costs.
    """
    steps = check_int("steps", steps, 1)
    chains = check_int("chains", chains, 2)
    batch_size = check_int("batch_size", batch_size, 1)
    record_every = max(steps // 100, 1) if record_every is None else check_int("record_every", record_every, 1)
    Hs = np.array([check_int("H", h, 1) for h in np.atleast_1d(H)])
    _check_run_memory(
        problem, steps=steps, chains=chains, batch_size=batch_size, record_every=record_every, n_horizons=len(Hs)
    )
    run = run_sgd(
        problem,
        eta=eta,
        gamma=gamma,
        batch_size=batch_size,
        steps=steps,
        chains=chains,
        seed=seed,
        record_every=record_every,
        init=init,
        quiet=quiet,
        allow_divergent=allow_divergent,
    )
    raw, ema = problem.cost(run.K, Hs), problem.cost(run.ema, Hs)
    moments = predict_moments(
        problem, eta=eta, gamma=gamma, batch_size=batch_size, steps=steps, init=init, allow_divergent=allow_divergent
    )
    return GVAExperiment(
        problem=problem,
        run=run,
        H=Hs,
        J_raw=raw.value,
        J_ema=ema.value,
        overflow_raw=raw.overflow,
        overflow_ema=ema.overflow,
        loss_raw=problem.loss_bc(run.K),
        loss_ema=problem.loss_bc(run.ema),
        moments=moments,
        pred_raw=delta_method(problem, moments.mean_raw, moments.cov_raw, Hs),
        pred_ema=delta_method(problem, moments.mean_ema, moments.cov_ema, Hs),
    )
