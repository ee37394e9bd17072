r"""Other libraries' averaging settings in this toolkit's terms.

A researcher coming from ema-pytorch, the BEMA authors' code or TRL should get the same numbers
from :mod:`gvatheory.stabilizers` and :mod:`gvaempirics.stabilizers` when the settings match.
Each function here takes a reference's own parameters (same names, same defaults) and returns
the :class:`Equivalent`: the weight schedule and the update period that reproduce its average
at every step, or refuses with a ``ValueError`` saying why no equivalent exists. The
constructors ``EMA.from_ema_pytorch``, ``BEMA.from_authors`` and ``BEMA.from_trl`` of both
implementations are built on these functions. Clock: update ``t`` absorbs :math:`\theta_t`, the
iterate after ``t`` gradient steps, as everywhere in the toolkit; the references count the same
gradient steps when the stabilizer's ``update()`` is called once per step (and once before the
first, for :math:`\theta_0`).

References (the rules the tests re-implement or run):

* ema-pytorch 0.8.3, ``ema_pytorch/ema_pytorch.py`` class ``EMA`` (run directly in the tests);
* the BEMA authors' offline stabilizer, ``abblock/bema`` ``src/core_offline.py`` class ``BEMA``
  (Block & Zhang 2025, "EMA without the lag: bias-corrected iterate averaging"), driven by
  ``src/run_eval.py`` on checkpoints every ``update_freq`` steps;
* TRL's ``BEMACallback`` (``trl/trainer/callbacks.py``):
  :math:`\beta_t = (\rho + \gamma t)^{-\kappa}`, :math:`\alpha_t = (\rho + \gamma t)^{-\eta}`
  on the absolute step, :math:`\theta_0` taken at ``update_after``.

``docs/stabilizers.md`` ("Coming from ...") lists every known difference.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from ._checks import check_int, check_positive, check_range
from .schedules import BEMASchedule, PowerEMA, Schedule

__all__ = ["Equivalent", "ema_pytorch", "bema_authors", "bema_trl"]


@dataclass(frozen=True)
class Equivalent:
    """A reference's settings in this toolkit's terms.

    Attributes
    ----------
    schedule : Schedule
        The weight schedule (:class:`PowerEMA` or :class:`BEMASchedule`).
    every : int
        Update period: only iterates :math:`\\theta_t` with ``t % every == 0`` are absorbed.
    """

    schedule: Schedule
    every: int


def _no_equivalent(name: str, value, reason: str) -> ValueError:
    return ValueError(f"{name}={value!r} has no equivalent here: {reason}")


def ema_pytorch(
    *,
    beta: float = 0.9999,
    update_after_step: int = 100,
    update_every: int = 10,
    inv_gamma: float = 1.0,
    power: float = 2 / 3,
    min_value: float = 0.0,
    update_model_with_ema_every: int | None = None,
    param_or_buffer_names_no_ema: Collection[str] = (),
    ignore_names: Collection[str] = (),
    ignore_startswith_names: Collection[str] = (),
) -> Equivalent:
    r"""``ema_pytorch.EMA(model, ...)`` with these settings (its defaults) as a :class:`PowerEMA`.

    ema-pytorch copies the model at its first call and at calls ``k <= update_after_step``
    (``u``) with ``k % update_every == 0``; at later such calls it lerps with weight
    :math:`1 - \mathrm{decay}`,
    :math:`\mathrm{decay} = \mathrm{clamp}(1 - (1 + (k-u)/\mathrm{inv\_gamma})^{-\mathrm{power}},
    \mathrm{min\_value}, \beta)`. That is ``PowerEMA(alpha=power, gamma_min=1-beta,
    burn_in=u, t0=inv_gamma, origin=u, gamma_max=1-min_value)`` with ``every=update_every``.

    The name filters and ``update_model_with_ema_every`` (which writes the average back into
    the online model) have no equivalent and are refused when set.
    """
    check_range("beta", beta, 0.0, 1.0)
    check_range("min_value", min_value, 0.0, float(beta))
    u = check_int("update_after_step", update_after_step, 0)
    every = check_int("update_every", update_every, 1)
    check_positive("inv_gamma", inv_gamma)
    check_positive("power", power)
    if update_model_with_ema_every is not None:
        raise _no_equivalent(
            "update_model_with_ema_every", update_model_with_ema_every, "our stabilizers never write into the model"
        )
    for name, names in (
        ("param_or_buffer_names_no_ema", param_or_buffer_names_no_ema),
        ("ignore_names", ignore_names),
        ("ignore_startswith_names", ignore_startswith_names),
    ):
        if names:
            raise _no_equivalent(name, names, "every floating-point parameter is averaged")
    # beta = 1 freezes ema-pytorch's average after the copies of the burn-in (is_frozen)
    gamma_max = 0.0 if beta == 1.0 else 1.0 - float(min_value)
    schedule = PowerEMA(
        alpha=float(power),
        gamma_min=1.0 - float(beta),
        burn_in=u,
        t0=float(inv_gamma),
        origin=u,
        gamma_max=gamma_max,
    )
    return Equivalent(schedule=schedule, every=every)


def bema_authors(
    *,
    update_freq: int,
    ema_power: float = 0.5,
    update_after: int = 0,
    eta_power: float = 0.2,
    ema_gamma: float = 1.0,
    scaling_lag: float = 0,
    min_ema_multiplier: float = 0.0,
    ema_update_after: int | None = None,
) -> Equivalent:
    r"""The authors' offline ``BEMA(model, ...)`` (``core_offline.py``, its defaults) fed the
    checkpoints at steps ``update_freq, 2 update_freq, ...`` as a :class:`BEMASchedule`.

    Their rule at checkpoint step ``s >= update_after`` (``u``), with
    ``T = max(s - u + scaling_lag, 1)``: EMA weight
    :math:`\beta = \max((1 + \mathrm{ema\_gamma}\,T)^{-\mathrm{ema\_power}}, \mathrm{min})`,
    correction weight :math:`(1 + T)^{-\mathrm{eta\_power}}` (no ``ema_gamma``), and at the first
    such checkpoint the EMA starts from the previous checkpoint. Hence ``correction_c=False,
    seeded_burn_in=True``, ``every=update_freq`` and, with ``b`` the first checkpoint at or after
    ``u``, ``burn_in=b, lag=scaling_lag + b - u``. Their code copies the iterate (no EMA) for
    ``ema_power`` outside ``(0, 1)``: ``kappa=0``.

    Refused: ``eta_power < 0`` (their code then reports the plain EMA:
    ``EMA(BEMASchedule(...))`` is that) and an ``ema_update_after`` other than ``update_after``
    (two clocks).
    """
    k = check_int("update_freq", update_freq, 1)
    u = check_int("update_after", update_after, 0)
    check_range("ema_power", ema_power)
    check_range("eta_power", eta_power)
    check_positive("ema_gamma", ema_gamma)
    check_range("min_ema_multiplier", min_ema_multiplier, 0.0, 1.0)
    if eta_power < 0:
        raise _no_equivalent(
            "eta_power",
            eta_power,
            "a negative power turns their correction off; the plain EMA is EMA(BEMASchedule(...)) with the same settings",
        )
    if ema_update_after is not None and ema_update_after != update_after:
        raise _no_equivalent(
            "ema_update_after",
            ema_update_after,
            f"a separate EMA clock (update_after={update_after}); give ema_update_after=None",
        )
    check_range("scaling_lag", scaling_lag, 0.0)
    b = -(-u // k) * k  # the first checkpoint at or after update_after
    kappa = float(ema_power) if 0.0 < ema_power < 1.0 else 0.0
    schedule = BEMASchedule(
        kappa=kappa,
        p=float(eta_power),
        c=float(ema_gamma),
        lag=float(scaling_lag) + (b - u),
        gamma_min=float(min_ema_multiplier),
        burn_in=b,
        correction_c=False,
        seeded_burn_in=True,
    )
    return Equivalent(schedule=schedule, every=k)


def bema_trl(
    *,
    update_freq: int = 400,
    ema_power: float = 0.5,
    bias_power: float = 0.2,
    lag: float = 10,
    update_after: int = 0,
    multiplier: float = 1.0,
    min_ema_multiplier: float = 0.0,
) -> Equivalent:
    r"""TRL's ``BEMACallback(...)`` (its defaults) as a :class:`BEMASchedule`.

    TRL uses :math:`\beta_s = \max((\rho + \gamma s)^{-\kappa}, \mathrm{min})` and
    :math:`\alpha_s = (\rho + \gamma s)^{-\eta}` on the absolute step ``s`` (``rho = lag``,
    ``gamma = multiplier``), snapshots :math:`\theta_0` and the EMA at ``s = update_after``
    (``u``) and updates at ``s > u`` with ``(s - u) % update_freq == 0``. Since
    :math:`\rho + \gamma s = 1 + \gamma(s - u + \mathrm{lag}')` with
    :math:`\mathrm{lag}' = (\rho - 1)/\gamma + u`, that is ``BEMASchedule(kappa=ema_power,
    p=bias_power, c=multiplier, lag=lag', burn_in=u)`` with ``every=update_freq``.

    Refused: ``update_after`` not a multiple of ``update_freq`` (our update period counts from
    step 0) and ``lag < 1 - multiplier * update_after`` (a negative ``lag'``).
    """
    k = check_int("update_freq", update_freq, 1)
    u = check_int("update_after", update_after, 0)
    check_positive("multiplier", multiplier)
    check_range("lag", lag)
    check_range("ema_power", ema_power, 0.0, 1.0)
    check_range("bias_power", bias_power, 0.0)
    check_range("min_ema_multiplier", min_ema_multiplier, 0.0, 1.0)
    if u % k:
        raise _no_equivalent(
            "update_after", u, f"it must be a multiple of update_freq={k}, since our update period counts from step 0"
        )
    ours = (float(lag) - 1.0) / float(multiplier) + u
    if ours < 0:
        raise _no_equivalent(
            "lag",
            lag,
            f"our lag (lag - 1)/multiplier + update_after = {ours:g} would be negative; "
            f"need lag >= 1 - multiplier * update_after = {1.0 - float(multiplier) * u:g}",
        )
    schedule = BEMASchedule(
        kappa=float(ema_power),
        p=float(bias_power),
        c=float(multiplier),
        lag=ours,
        gamma_min=float(min_ema_multiplier),
        burn_in=u,
    )
    return Equivalent(schedule=schedule, every=k)
