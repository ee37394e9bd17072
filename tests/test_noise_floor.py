"""The noise floor (paper Sec. 4.3): the quadratic model's prediction against Monte Carlo, the
measurement against a torch model whose stationary law is exactly the quadratic model's, and the
study at a reduced budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gvatheory.averaging import QuadraticSGD, scalar_stationary
from gvatheory.moments import heavy_ball_ema_matrices, sgd_ema_matrices, stationary_cov
from gvatheory.noise_floor import noise_floor, spectrum_noise_floor, window_sum

H2 = np.array([[1.5, 0.4], [0.4, 0.8]])
S2 = np.array([[0.5, 0.2], [0.2, 0.3]])


# ---------------------------------------------------------------- the prediction


def test_window_sum_matches_plain_sum():
    for f in (-0.7, 0.0, 0.3, 0.95, 0.999):
        for W in (1, 2, 5, 300):
            plain = sum((W - k) * f**k for k in range(1, W))
            assert window_sum(np.array(f), W) == pytest.approx(plain, rel=1e-9, abs=1e-12)
    A = np.array([[0.97, -0.09], [0.05, 0.9]])  # a heavy-ball (z, n) block
    for W in (1, 2, 7, 400):
        plain = sum((W - k) * np.linalg.matrix_power(A, k) for k in range(1, W)) if W > 1 else np.zeros((2, 2))
        np.testing.assert_allclose(window_sum(A, W), plain, rtol=1e-9, atol=1e-12)


def test_scalar_noise_floor_matches_closed_form_and_identities():
    h, sigma, eta, gammas = 2.0, 0.7, 0.3, (0.01, 0.2)
    nf = noise_floor([h], eta, gammas, sigma=sigma)
    for g, ema in zip(gammas, nf.ema):
        closed = scalar_stationary(h, sigma, eta, g)
        assert nf.raw == pytest.approx(0.5 * h * closed.var_theta, rel=1e-10)
        assert ema == pytest.approx(0.5 * h * closed.var_ema, rel=1e-10)
    # msd = 2 eta h Var(theta) in one dimension; excess = msd / (4 eta) in any dimension
    assert nf.msd == pytest.approx(2 * eta * h * nf.var, rel=1e-10)
    assert nf.raw == pytest.approx(nf.msd / (4 * eta), rel=1e-10)
    nf2 = noise_floor(H2, 0.2, (0.05,), Sigma=S2)
    assert nf2.raw == pytest.approx(nf2.msd / (4 * 0.2), rel=1e-10)


def test_noise_floor_scaling_in_the_small_step_limit():
    """Raw excess ~ eta tr(Sigma)/4 (slope 1); EMA/raw ~ gamma/(gamma + eta h) (slope 1 in gamma)."""
    etas = np.array([1e-3, 2e-3, 4e-3])
    raws = np.array([noise_floor([1.0], e, (1e-5,)).raw for e in etas])
    assert np.polyfit(np.log(etas), np.log(raws), 1)[0] == pytest.approx(1.0, abs=2e-3)
    gammas = np.array([1e-5, 2e-5, 4e-5])
    nf = noise_floor([1.0], 1e-2, gammas)
    assert np.polyfit(np.log(gammas), np.log(nf.ema), 1)[0] == pytest.approx(1.0, abs=1e-2)
    assert nf.ratio == pytest.approx(gammas / (gammas + 1e-2), rel=2e-2)


def test_noise_floor_refuses_an_unstable_step():
    with pytest.raises(ValueError, match="eta"):
        noise_floor([1.0], 2.5, (0.1,))
    with pytest.raises(ValueError, match="window"):
        noise_floor([1.0], 0.1, (0.1,), window=-1)


def test_noise_floor_matches_monte_carlo():
    """Raw and EMA excess, msd, and the window mean's excess against simulated chains (4 SE)."""
    eta, gammas, W, T, chains = 0.2, (0.05, 0.2), 12, 400, 20000
    model = QuadraticSGD(Hs=H2, mu=[0.5, -1.0], Sigma=S2, eta=eta, gammas=gammas, theta0=[0.5, -1.0])
    times = np.arange(T - W + 1, T + 1)
    samples = model.simulate(chains, T, seed=7, times=times, quiet=True)
    z = samples.path - np.array([0.5, -1.0])  # (chains, W, 1+m, d) centred
    loss = lambda v: 0.5 * np.einsum("...i,ij,...j->...", v, H2, v)  # noqa: E731
    nf = noise_floor(H2, eta, gammas, Sigma=S2, window=W)
    checks = {
        "raw": (loss(z[:, -1, 0]), nf.raw),
        "ema0": (loss(z[:, -1, 1]), nf.ema[0]),
        "ema1": (loss(z[:, -1, 2]), nf.ema[1]),
        "msd": (((z[:, -1, 0] - z[:, -2, 0]) ** 2).sum(-1), nf.msd),
        "window mean": (loss(z[:, :, 0].mean(1)), nf.window_mean),
    }
    for name, (draws, exact) in checks.items():
        se = draws.std(ddof=1) / math.sqrt(chains)
        assert abs(draws.mean() - exact) <= 4 * se, f"{name}: MC {draws.mean():.5g} ± {se:.2g}, exact {exact:.5g}"
    assert nf.window_mean < nf.raw


def test_heavy_ball_matrices_expand_by_hand_and_reduce_to_sgd():
    """Two steps of x' = M x + B xi against the recursion written out, and beta = 0, c = 1 against
    the SGD engine (the (z, e) blocks of the stationary covariance)."""
    H, eta, beta, c, gammas = np.array([[1.5, 0.2], [0.2, 0.7]]), 0.3, 0.8, 0.2, np.array([0.1, 0.5])
    M, B = heavy_ball_ema_matrices(H, eta, beta, c, gammas)
    rng = np.random.default_rng(0)
    z, n, e1, e2 = (rng.standard_normal(2) for _ in range(4))
    x = np.concatenate([z, n, e1, e2])
    for _ in range(2):
        xi = rng.standard_normal(2)
        n = beta * n + c * (H @ z + xi)
        z = z - eta * n
        e1, e2 = 0.9 * e1 + 0.1 * z, 0.5 * e2 + 0.5 * z
        x = M @ x + B @ xi
        np.testing.assert_allclose(x, np.concatenate([z, n, e1, e2]), rtol=1e-12, atol=1e-12)
    M0, B0 = heavy_ball_ema_matrices(H, eta, 0.0, 1.0, gammas)
    P0 = stationary_cov(M0, B0 @ S2 @ B0.T)
    Ms, Bs = sgd_ema_matrices(H, eta, gammas)
    Ps = stationary_cov(Ms, Bs @ S2 @ Bs.T)
    keep = np.r_[0:2, 4:8]  # drop the momentum buffer
    np.testing.assert_allclose(P0[np.ix_(keep, keep)], Ps, rtol=1e-9, atol=1e-12)


def test_heavy_ball_matrices_match_the_local_model():
    """With one EMA, the same matrices as the local model's (z, n, e) recursion."""
    from gvaempirics.bc.local_model import momentum_ema_matrices

    H = np.array([[1.5, 0.2], [0.2, 0.7]])
    M, B = heavy_ball_ema_matrices(H, 0.3, 0.9, 0.1, np.array([0.05]))
    M2, B2 = momentum_ema_matrices(H, 0.3, 0.9, 0.1, 0.05)
    np.testing.assert_allclose(M, M2, rtol=0, atol=1e-15)
    np.testing.assert_allclose(B, B2, rtol=0, atol=1e-15)


def test_spectrum_floor_is_noise_floor_mode_by_mode():
    """Without momentum each mode is the one-dimensional noise floor, and the sum over modes is the
    full model's with the Hessian diagonal; off-diagonal noise does not change the excess."""
    lam, s, eta, gammas, W = np.array([3.0, 0.5, 0.01]), np.array([2.0, 0.7, 0.1]), 0.3, (0.01, 0.1), 300
    sf = spectrum_noise_floor(lam, s, eta, gammas, window=W)
    for i in range(3):
        one = noise_floor([lam[i]], eta, gammas, sigma=math.sqrt(s[i]), window=W)
        assert sf.raw_modes[i] == pytest.approx(one.raw, rel=1e-9)
        np.testing.assert_allclose(sf.ema_modes[i], one.ema, rtol=1e-9)
        assert sf.window_modes[i] == pytest.approx(one.window_mean, rel=1e-7)
    corr = np.sqrt(np.outer(s, s)) * np.array([[1.0, 0.5, -0.3], [0.5, 1.0, 0.2], [-0.3, 0.2, 1.0]])
    full = noise_floor(lam, eta, gammas, Sigma=corr, window=W)
    assert full.raw == pytest.approx(sf.raw, rel=1e-9)
    np.testing.assert_allclose(full.ema, sf.ema, rtol=1e-9)
    assert full.window_mean == pytest.approx(sf.window_mean, rel=1e-7)
    # one noise scale for all modes scales every excess: slopes and ratios do not see it
    twice = spectrum_noise_floor(lam, 2 * s, eta, gammas, window=W)
    np.testing.assert_allclose(twice.ratio, sf.ratio, rtol=1e-12)
    assert twice.raw == pytest.approx(2 * sf.raw, rel=1e-12)


def test_spectrum_floor_spread_flattens_the_ema_slope():
    """One curvature: EMA excess slope ~1 in gamma << eta h; a spread of curvatures with equal
    noise: markedly shallower (the slow modes are not averaged)."""
    gammas = np.array([1e-3, 3e-3, 1e-2])
    one = spectrum_noise_floor([10.0], [1.0], 0.1, gammas)
    spread = spectrum_noise_floor(np.geomspace(1e-3, 10.0, 20), np.ones(20), 0.1, gammas)
    slope = lambda y: np.polyfit(np.log(gammas), np.log(y), 1)[0]  # noqa: E731
    assert slope(one.ema) == pytest.approx(1.0, abs=0.02)
    assert slope(spread.ema) < 0.6


def test_spectrum_floor_refuses_bad_input():
    with pytest.raises(ValueError, match="curvatures"):
        spectrum_noise_floor([1.0, -0.1], [1.0, 1.0], 0.1, (0.1,))
    with pytest.raises(ValueError, match="noise"):
        spectrum_noise_floor([1.0], [1.0, 1.0], 0.1, (0.1,))
    with pytest.raises(ValueError, match="noise"):
        spectrum_noise_floor([1.0], [-1.0], 0.1, (0.1,))
    with pytest.raises(ValueError, match="eta"):
        spectrum_noise_floor([30.0], [1.0], 0.1, (0.1,))
    with pytest.raises(ValueError, match="beta"):
        spectrum_noise_floor([1.0], [1.0], 0.1, (0.1,), beta=1.0)
    with pytest.raises(ValueError, match="gammas"):
        spectrum_noise_floor([1.0], [1.0], 0.1, ())
    # heavy ball is stable far beyond eta * lambda = 2 (Adam's regime)
    assert math.isfinite(spectrum_noise_floor([30.0], [1.0], 0.1, (0.1,), beta=0.9, c=0.1).raw)


def test_spectrum_floor_with_momentum_matches_monte_carlo():
    """Heavy-ball chains, mode by mode (a plain loop of the recursion): raw and EMA excess and the
    window mean's excess, each summed over modes, within 4 SE."""
    lam, s, eta, beta, c, gammas, W = (
        np.array([4.0, 1.0, 0.3]),
        np.array([1.0, 0.5, 0.2]),
        0.2,
        0.9,
        0.1,
        (0.05, 0.3),
        12,
    )
    sf = spectrum_noise_floor(lam, s, eta, gammas, beta=beta, c=c, window=W)
    chains, T = 20000, 600
    rng = np.random.default_rng(11)
    z, n = np.zeros((chains, 3)), np.zeros((chains, 3))
    e = np.zeros((2, chains, 3))
    zs = []
    for t in range(T):
        n = beta * n + c * (lam * z + np.sqrt(s) * rng.standard_normal((chains, 3)))
        z = z - eta * n
        for k, g in enumerate(gammas):
            e[k] = (1 - g) * e[k] + g * z
        if t >= T - W:
            zs.append(z)
    loss = lambda v: 0.5 * (lam * v**2).sum(-1)  # noqa: E731
    checks = {
        "raw": (loss(z), sf.raw),
        "ema0": (loss(e[0]), sf.ema[0]),
        "ema1": (loss(e[1]), sf.ema[1]),
        "window mean": (loss(np.mean(zs, axis=0)), sf.window_mean),
    }
    for name, (draws, exact) in checks.items():
        se = draws.std(ddof=1) / math.sqrt(chains)
        assert abs(draws.mean() - exact) <= 4 * se, f"{name}: MC {draws.mean():.5g} ± {se:.2g}, exact {exact:.5g}"


# ---------------------------------------------------------------- the measurement on a known case


class _Theta(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(d))


def _quadratic_trainer(tmp_path, *, eta: float, seed: int, X: torch.Tensor, H: torch.Tensor, batch: int, **kw):
    """SGD on mean_i (theta - x_i)^T H (theta - x_i) / 2 with minibatches: additive noise, so the
    stationary law is exactly QuadraticSGD's with Sigma = H Cov(x) H / batch."""
    from gvaempirics.config import TrainingOptions
    from gvaempirics.rundir import RunDir
    from gvaempirics.training import Trainer

    class QuadraticTrainer(Trainer):
        def minibatch_loss(self):
            idx = torch.randint(len(X), (self.cfg.batch_size,), generator=self.generator)
            dev = self.model.theta - X[idx]  # (b, d)
            return 0.5 * ((dev @ H) * dev).sum(1).mean()

    opts = dict(optimizer="sgd", momentum=0.0, eta=eta, schedule="constant", warmup=0, batch_size=batch, seed=seed)
    cfg = TrainingOptions(**{**opts, "threads": 1, **kw})
    torch.manual_seed(seed)
    return QuadraticTrainer(cfg, RunDir(tmp_path / "run"), _Theta(X.shape[1]), quiet=True)


def test_measurement_recovers_the_quadratic_model(tmp_path):
    """measure_noise_floor on a model whose stationary law is the quadratic model's: raw and EMA
    excesses over the window mean, and the msd, within 4 SE over independent seeds."""
    from gvaempirics.noise_floor import measure_noise_floor

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(200, 2, generator=gen, dtype=torch.float64).float() * torch.tensor([1.0, 0.6])
    H = torch.tensor([[1.0, 0.2], [0.2, 0.5]])
    mu = X.mean(0)
    eta, batch, gammas, W = 0.2, 4, (0.02, 0.1), 1500
    Xc = (X - mu).double()
    Sigma = (H.double() @ (Xc.T @ Xc / len(X)) @ H.double()).numpy() / batch
    nf = noise_floor(H.double().numpy(), eta, gammas, Sigma=Sigma, window=W)
    pred_raw, pred_ema = nf.over_reference()

    def val_loss(model):
        with torch.no_grad():
            dev = model.theta - X
            return float(0.5 * ((dev @ H) * dev).sum(1).mean())

    runs = []
    for seed in range(6):
        trainer = _quadratic_trainer(tmp_path, eta=eta, seed=seed, X=X, H=H, batch=batch)
        with torch.no_grad():
            trainer.model.theta.copy_(mu)
        runs.append(measure_noise_floor(trainer, val_loss, gammas=gammas, burn=300, window=W, eval_every=3))
    checks = {
        "raw": ([r.excess_raw for r in runs], pred_raw),
        "ema0": ([r.excess_ema[0] for r in runs], pred_ema[0]),
        "ema1": ([r.excess_ema[1] for r in runs], pred_ema[1]),
        "msd": ([r.msd for r in runs], nf.msd),
    }
    for name, (values, exact) in checks.items():
        v = np.asarray(values)
        se = v.std(ddof=1) / math.sqrt(len(v))
        assert abs(v.mean() - exact) <= 4 * se, f"{name}: measured {v.mean():.5g} ± {se:.2g}, model {exact:.5g}"
    # the measured excess is the window's own statistic: it reads the right losses, not a constant
    assert all(r.raw.shape == ((W - 1) // 3,) for r in runs) and all(r.ema.shape == (2, (W - 1) // 3) for r in runs)


def test_measurement_kappa_is_eta_h_in_one_dimension(tmp_path):
    """msd / (2 var) estimates eta h for a scalar quadratic (4 SE over seeds)."""
    from gvaempirics.noise_floor import measure_noise_floor

    torch.set_num_threads(1)
    X = torch.randn(100, 1, generator=torch.Generator().manual_seed(1))
    H = torch.tensor([[2.0]])
    kappas = []
    for seed in range(4):
        trainer = _quadratic_trainer(tmp_path, eta=0.1, seed=seed, X=X, H=H, batch=1)
        fw = measure_noise_floor(trainer, lambda m: 0.0, gammas=(0.5,), burn=100, window=1500, eval_every=1500)
        kappas.append(fw.kappa)
    k = np.asarray(kappas)
    # the window mean is estimated from the window itself, a bias of O(1/(kappa W)) ~ 0.6% here
    assert abs(k.mean() - 0.2) <= 4 * k.std(ddof=1) / math.sqrt(len(k)) + 0.01 * 0.2


def test_measurement_refuses_bad_input(tmp_path):
    from gvaempirics.noise_floor import measure_noise_floor

    X = torch.randn(20, 1, generator=torch.Generator().manual_seed(2))
    H = torch.eye(1)
    trainer = _quadratic_trainer(tmp_path, eta=0.1, seed=0, X=X, H=H, batch=2)
    with pytest.raises(ValueError, match="gammas"):
        measure_noise_floor(trainer, lambda m: 0.0, gammas=(), burn=0, window=10)
    with pytest.raises(ValueError, match="gammas"):
        measure_noise_floor(trainer, lambda m: 0.0, gammas=(1.5,), burn=0, window=10)
    with pytest.raises(ValueError, match="window"):
        measure_noise_floor(trainer, lambda m: 0.0, gammas=(0.1,), burn=0, window=1)
    cosine = _quadratic_trainer(tmp_path, eta=0.1, seed=0, X=X, H=H, batch=2, schedule="cosine", steps=50)
    with pytest.raises(ValueError, match="constant"):
        measure_noise_floor(cosine, lambda m: 0.0, gammas=(0.1,), burn=0, window=10)


def test_floor_window_round_trips_through_json(tmp_path):
    from gvaempirics.noise_floor import FloorWindow, measure_noise_floor

    X = torch.randn(20, 1, generator=torch.Generator().manual_seed(3))
    trainer = _quadratic_trainer(tmp_path, eta=0.1, seed=0, X=X, H=torch.eye(1), batch=2)
    val = lambda m: float(m.theta.detach().square().sum())  # noqa: E731
    fw = measure_noise_floor(trainer, val, gammas=(0.1, 0.3), burn=5, window=20, eval_every=4)
    back = FloorWindow.from_json(fw.to_json())
    assert back.excess_raw == fw.excess_raw and np.array_equal(back.excess_ema, fw.excess_ema)
    assert back.steps.tolist() == fw.steps.tolist() == [9, 13, 17, 21]


# ---------------------------------------------------------------- the verdicts on synthetic floors


def _synthetic(kind: str, *, seeds: int = 3, seed: int = 0):
    """Per-seed floors of a quadratic with a spread of curvatures (each seed its own spectrum, as
    each replicate measures its own), no training: ``kind`` "model" follows the model within 3%
    noise per point; "flat" has an EMA excess that does not fall with gamma; "flat-raw" a raw
    excess that does not grow with eta; "drifting" follows the model but its raw loss moves by
    half the excess across the window."""
    from gvaempirics.noise_floor import Spectrum
    from validation.studies import noise_floor as study

    rng = np.random.default_rng(seed)
    etas, gammas, W = np.array([0.01, 0.03, 0.1]), np.array([3e-3, 1e-2, 3e-2, 1e-1]), 3000
    raw, ema, pr, pe = [], [], [], []
    for _ in range(seeds):
        lam = np.sort(np.geomspace(0.02, 3.0, 24) * np.exp(0.1 * rng.standard_normal(24)))[::-1]
        sp = Spectrum(lam, 1e-3 * lam * np.exp(0.2 * rng.standard_normal(24)), 1.0, 0.0, 1.0, 2000)
        p_raw, p_ema, why = study.predict(sp, etas, gammas, W)
        assert not why
        noise = lambda shape: np.exp(0.03 * rng.standard_normal(shape))  # noqa: E731
        r = (p_raw if kind != "flat-raw" else np.full_like(p_raw, p_raw[1])) * noise(p_raw.shape)
        em = p_ema * noise(p_ema.shape) if kind != "flat" else 0.9 * r[:, None] * noise(p_ema.shape)
        raw.append(r), ema.append(em), pr.append(p_raw), pe.append(p_ema)
    raw = np.array(raw)
    drift = (0.5 if kind == "drifting" else 0.02) * raw * rng.choice([-1, 1], raw.shape)
    if kind == "drifting":
        drift = -np.abs(drift)
    return study.Floors("bc-sgd", kind, etas, gammas, raw, np.array(ema), drift, np.array(pr), np.array(pe))


def _outcomes(floors):
    """The verdicts by the bc-sgd rules (the regions are the same for every setting)."""
    from validation.studies import noise_floor as study

    return {v.rule.rsplit("/", 1)[1]: v for v in study.decide(floors)}


def test_control_the_model_supports():
    """A stationary quadratic with a spread of curvatures whose floors follow the model: every
    verdict supports, and the EMA slope it predicts is well below 1 (the spread flattens it)."""
    from validation.studies import noise_floor as study

    f = _synthetic("model")
    out = _outcomes(f)
    assert {k: v.outcome for k, v in out.items()} == dict.fromkeys(("raw-slope", "ema-slope", "ema-ratio"), "supports")
    assert np.all(study.units(f).ema_pred < 0.8)
    assert "80% power" in out["ema-slope"].detail and out["raw-slope"].rule_text


def test_control_a_flat_ema_contradicts():
    """An EMA excess that does not fall with gamma at all: the EMA slope and the ratio contradict."""
    out = _outcomes(_synthetic("flat"))
    assert out["ema-slope"].outcome == "contradicts" and out["ema-ratio"].outcome == "contradicts"
    assert out["raw-slope"].outcome == "supports"


def test_control_a_flat_raw_excess_contradicts_the_raw_slope():
    """A raw excess that does not grow with eta (measured slope 0 against a predicted ~1)."""
    assert _outcomes(_synthetic("flat-raw"))["raw-slope"].outcome == "contradicts"


def test_lag_correction_by_hand():
    """The descriptive lag column: the model's EMA/raw ratio minus 2 drift (1 - gamma) / (gamma W
    raw excess), means over seeds, checked at one (eta, gamma) by hand."""
    from validation.studies import noise_floor as study

    f = _synthetic("drifting")
    got = study.lag_corrected(f, 3000)
    e, g = 1, 0
    model = np.mean(f.pred_ema[:, e, g] / f.pred_raw[:, e])
    lag = (1 - f.gammas[g]) / f.gammas[g]
    want = model - 2 * f.drift[:, e].mean() / 3000 * lag / f.raw[:, e].mean()
    assert got.shape == (3, 4) and got[e, g] == pytest.approx(want)
    assert np.all(got > np.mean(f.pred_ema / f.pred_raw[:, :, None], axis=0))  # a falling loss raises the EMAs


def test_control_a_drifting_floor_is_inconclusive():
    """The same floors with a raw loss that still falls (drift half the excess): every verdict is
    inconclusive, and says why."""
    out = _outcomes(_synthetic("drifting"))
    for v in out.values():
        assert v.outcome == "inconclusive" and "not stationary" in v.detail, v.detail


def test_gates_name_a_missing_prediction_and_a_negative_excess():
    from validation.studies import noise_floor as study

    f = _synthetic("model")
    f.ema[0, 0, 0] = -1e-6  # a window whose EMA ended below its reference
    out = _outcomes(f)
    assert out["raw-slope"].outcome == "supports"
    assert out["ema-slope"].outcome == "inconclusive" and "not positive" in out["ema-slope"].detail
    f = _synthetic("model")
    f.unstable = "no stationary law of the model at eta=0.1"
    assert all(v.outcome == "inconclusive" and "stationary law" in v.detail for v in _outcomes(f).values())
    # the model itself refuses an unstable step
    from gvaempirics.noise_floor import Spectrum

    raw, ema, why = study.predict(
        Spectrum(np.array([30.0]), np.array([1.0]), 1.0, 0.0, 1.0, 10), [0.01, 0.1], [0.1], 100
    )
    assert "eta=0.1" in why and np.isfinite(raw[0]) and np.isnan(raw[1])


def test_study_reduced_budget(tmp_path, monkeypatch):
    """The study end to end at a tiny budget (one replicate per setting, so every verdict is
    inconclusive by its rule's minimum): one verdict per rule, each with its rule and numbers, a
    figure, and the same numbers when a rerun reads the saved replicates back."""
    from gvaempirics.noise_floor import FloorSetting
    from validation.studies import noise_floor as study

    def tiny(quick: bool):
        g = (0.01, 0.03, 0.1)
        return [
            FloorSetting("bc-sgd", "BC Hopper, SGD", "bc", "sgd", (0.03, 0.1), g, 1, 150, 300, 200, 0.05, 10, modes=4),
            FloorSetting("lm-adam", "LM, Adam", "lm", "adam", (1e-3, 3e-3), g, 1, 100, 200, 100, 1e-2, 10, modes=4,
                         spectrum_samples=16),
        ]  # fmt: skip

    monkeypatch.setattr(study, "settings", tiny)
    section = study.run(tmp_path, quick=True, seed=0, quiet=True, workers=1)
    assert section.key == "noise-floor" and len(section.verdicts) == 6
    assert [v.rule for v in section.verdicts] == [
        f"noise-floor/{k}/{n}" for k in ("bc-sgd", "lm-adam") for n in ("raw-slope", "ema-slope", "ema-ratio")
    ]
    for v in section.verdicts:
        assert v.outcome == "inconclusive" and any(ch.isdigit() for ch in v.detail) and v.rule_text
    assert all(p.is_file() for p in section.figures)
    again = study.run(tmp_path, quick=True, seed=0, quiet=True, workers=1)
    assert [v.detail for v in again.verdicts] == [v.detail for v in section.verdicts]


def test_replicates_have_their_own_seeds():
    from gvaempirics.noise_floor import replicate_seeds

    seeds = [replicate_seeds(0, r) for r in range(3)] + [replicate_seeds(1, 0)]
    assert len({s for trio in seeds for s in trio}) == 12
    assert replicate_seeds(0, 2) == replicate_seeds(0, 2)


def test_floor_setting_refuses_bad_input():
    from gvaempirics.noise_floor import FloorSetting

    ok = dict(key="k", label="k", kind="bc", optimizer="sgd", etas=(0.1,), gammas=(0.1,), seeds=1, burn=0, window=10,
              warm_steps=1, warm_eta=0.1, eval_every=5)  # fmt: skip
    FloorSetting(**ok)
    for field, bad in (("kind", "rl"), ("optimizer", "lion"), ("gammas", (1.5,)), ("etas", ()), ("eval_every", 20),
                       ("seeds", 0), ("modes", 0)):  # fmt: skip
        with pytest.raises(ValueError, match=field):
            FloorSetting(**{**ok, field: bad})


def test_spectrum_of_a_linear_model_is_its_exact_hessian():
    """Squared error of a linear map: the Hessian is 2 E[x x^T] / d_act per output and the
    per-sample gradients are known; with Adam, the preconditioned Hessian D^1/2 H D^1/2."""
    from gvaempirics.noise_floor import measure_spectrum

    torch.manual_seed(0)
    n, d_in, d_act, B = 300, 4, 1, 8  # one output: no repeated eigenvalue, so each mode is defined
    x, y = torch.randn(n, d_in) * torch.tensor([2.0, 1.0, 0.7, 0.3]), torch.randn(n, d_act)
    model = nn.Linear(d_in, d_act, bias=False)
    X, Y, Wt = x.double().numpy(), y.double().numpy(), model.weight.detach().double().numpy()
    H1 = 2 * X.T @ X / n / d_act  # per output row of W
    for kind in ("sgd", "adam"):
        opt = torch.optim.SGD(model.parameters(), lr=0.1) if kind == "sgd" else torch.optim.Adam(model.parameters())
        if kind == "adam":  # second moments from a few steps, weights restored
            w0 = model.weight.detach().clone()
            for _ in range(3):
                opt.zero_grad()
                ((model(x) - y) ** 2).mean().backward()
                opt.step()
            with torch.no_grad():
                model.weight.copy_(w0)
            st = opt.state[model.weight]
            v = st["exp_avg_sq"].double().numpy().reshape(-1) / (1 - 0.999 ** (float(st["step"]) + 1))
            s = np.sqrt(1 / (np.sqrt(v) + 1e-8))  # D^1/2, D = 1 / (sqrt(v_hat) + eps)
        else:
            s = np.ones(d_in * d_act)
        sp = measure_spectrum(model, opt, (x, y), kind="bc", batch_size=B, k=3, beta=0.0, c=1.0)
        H = np.kron(np.eye(d_act), H1)  # parameters flattened row-major: W[a, i]
        Hs = s[:, None] * H * s[None, :]
        lam, V = np.linalg.eigh(Hs)
        np.testing.assert_allclose(sp.curvatures, lam[::-1][:3], rtol=1e-6)
        resid = X @ Wt.T - Y  # (n, d_act)
        G = (2 / d_act) * np.einsum("na,ni->nai", resid, X).reshape(n, -1) * s  # per-sample gradients
        np.testing.assert_allclose(sp.noise_total, G.var(0, ddof=1).sum() / B, rtol=1e-6)
        top = V[:, ::-1][:, :3]
        np.testing.assert_allclose(sp.noise, (G @ top).var(0, ddof=1) / B, rtol=1e-5)


def test_spectrum_of_a_language_model_matches_its_full_hessian():
    """Cross-entropy of a tiny GPT: the Lanczos top eigenvalues equal the full Hessian's (formed by
    torch.autograd.functional.hessian), and the noise of each mode its per-window gradients'."""
    from gvaempirics.bc.local_model import unflatten
    from gvaempirics.lm.model import GPT, GPTConfig
    from gvaempirics.noise_floor import measure_spectrum

    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4))
    windows = torch.randint(5, (12, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = measure_spectrum(model, opt, (windows, None), kind="lm", batch_size=4, k=3, beta=0.0, c=1.0)
    m = GPT(model.config).double()
    m.load_state_dict(model.state_dict())
    shapes = [(n, p.shape) for n, p in m.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    def loss(t, w=windows):
        return torch.func.functional_call(m, unflatten(t, shapes), (w[:, :-1], w[:, 1:]))[1]

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        H = torch.autograd.functional.hessian(loss, theta).numpy()
        G = np.stack([torch.func.grad(loss)(theta, windows[i : i + 1]).numpy() for i in range(len(windows))])
    lam, V = np.linalg.eigh(0.5 * (H + H.T))
    np.testing.assert_allclose(sp.curvatures, lam[::-1][:3], rtol=1e-5)
    np.testing.assert_allclose(sp.noise, (G @ V[:, ::-1][:, :3]).var(0, ddof=1) / 4, rtol=1e-4)
    assert sp.samples == 12 and 0 < sp.captured < 1
