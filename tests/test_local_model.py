"""The local linear-Gaussian model of training (gvaempirics.bc.local_model) and studies 2 and 3."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gvaempirics.bc.local_model import (
    LocalModel,
    continue_training,
    fit_local_model,
    flat_parameters,
    hvp_operator,
    momentum_ema_matrices,
    optimizer_dynamics,
    per_sample_gradients,
    per_sample_gradients_reference,
    top_eigenpairs,
    unflatten,
)
from gvatheory.moments import sgd_ema_stationary, stationary_cov


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_net(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))
    x = torch.randn(40, 3)
    y = torch.randn(40, 2)
    return net, x, y


def _dense_hessian(net, x, y) -> np.ndarray:
    shapes = [(n, p.shape) for n, p in net.named_parameters()]
    theta = flat_parameters(net).double()
    m = net.double()

    def loss(t):
        return ((torch.func.functional_call(m, unflatten(t, shapes), (x.double(),)) - y.double()) ** 2).mean()

    H = torch.func.hessian(loss)(theta).numpy()
    net.float()
    return H


def test_eigsh_matches_dense_hessian():
    net, x, y = _tiny_net()
    H = _dense_hessian(net, x, y)
    theta = flat_parameters(net).double()
    dense = np.sort(np.linalg.eigvalsh(H))[::-1]
    vals, vecs = top_eigenpairs(hvp_operator(net, theta, x, y, chunk=16), 5, seed=1)
    np.testing.assert_allclose(vals, dense[:5], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(H @ vecs, vecs * vals, atol=1e-7)
    # preconditioned: S H S with S = diag(scale)
    s = torch.rand(theta.numel(), dtype=torch.float64) + 0.5
    SHS = s.numpy()[:, None] * H * s.numpy()[None, :]
    vals_s, _ = top_eigenpairs(hvp_operator(net, theta, x, y, scale=s), 4, seed=2)
    np.testing.assert_allclose(vals_s, np.sort(np.linalg.eigvalsh(SHS))[::-1][:4], rtol=1e-8, atol=1e-10)


def test_per_sample_projected_gradients_match_a_plain_loop():
    net, x, y = _tiny_net(1)
    theta = flat_parameters(net).double()
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((theta.numel(), 4)))[0]
    s = torch.rand(theta.numel(), dtype=torch.float64) + 0.5
    fast = per_sample_gradients(net, theta, x, y, basis, scale=s, chunk=7)
    slow = per_sample_gradients_reference(net, theta, x, y, basis, scale=s)
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)
    # their mean is the projected full-batch gradient
    t = theta.clone().requires_grad_(True)
    shapes = [(n, p.shape) for n, p in net.named_parameters()]
    m = net.double()
    loss = ((torch.func.functional_call(m, unflatten(t, shapes), (x.double(),)) - y.double()) ** 2).mean()
    (g,) = torch.autograd.grad(loss, t)
    net.float()
    np.testing.assert_allclose(fast.mean(0), ((g * s) @ torch.as_tensor(basis)).numpy(), rtol=1e-9, atol=1e-12)


def test_momentum_matrices_reduce_to_the_sgd_ema_engine_and_expand_by_hand():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((3, 3))
    H = A @ A.T + np.eye(3)
    S = np.diag([1.0, 0.5, 0.2])
    eta, gamma = 0.1, 0.2
    M, B = momentum_ema_matrices(H, eta, 0.0, 1.0, gamma)
    P = stationary_cov(M, B @ S @ B.T)
    ref = sgd_ema_stationary(H, S, eta, np.array([gamma]))
    np.testing.assert_allclose(P[:3, :3], ref[:3, :3], rtol=1e-10)
    np.testing.assert_allclose(P[6:, 6:], ref[3:, 3:], rtol=1e-10)
    np.testing.assert_allclose(P[:3, 6:], ref[:3, 3:], rtol=1e-10)
    # one step with momentum, by hand
    beta, c = 0.9, 0.1
    M, B = momentum_ema_matrices(H, eta, beta, c, gamma)
    z, n, e, zeta = rng.standard_normal((4, 3))
    n1 = beta * n + c * (H @ z + zeta)
    z1 = z - eta * n1
    e1 = (1 - gamma) * e + gamma * z1
    np.testing.assert_allclose(M @ np.concatenate([z, n, e]) + B @ zeta, np.concatenate([z1, n1, e1]), atol=1e-12)


def test_sampled_windows_follow_the_stationary_law():
    """Monte Carlo twin of LocalModel.stationary: the recursion's samples have its covariance."""
    k = 2
    local = LocalModel(
        eigenvalues=np.array([3.0, 1.0]),
        directions=np.eye(k),
        coords=np.eye(k),
        noise_cov=np.array([[1.0, 0.3], [0.3, 0.5]]),
        mean=np.zeros(k),
        eta=0.05,
        beta=0.9,
        c=0.1,
        gamma=0.1,
        batch_size=1,
        optimizer="adam",
        theta=np.zeros(k),
        noise_samples=1,
        scale=np.ones(k),
    )
    raw, ema = local.sample_windows(4000, 2, seed=3)
    for z, P in ((raw[:, 0], local.raw_cov), (ema[:, 1], local.ema_cov)):
        v = z.var(0, ddof=1)
        se = np.diag(P) * math.sqrt(2 / (len(z) - 1))  # SE of a Gaussian sample variance
        assert np.all(np.abs(v - np.diag(P)) < 4 * se), (v, np.diag(P))


def _regression(seed: int = 0, n: int = 2000):
    """Linear regression with distinct curvatures (8, 3.9, 2, 1.3, 0.5), parameters at the least-squares fit."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([2.0, 1.4, 0.8, 0.5])
    x = torch.randn(n, 4, generator=g) * scales
    x = x - x.mean(0)
    y = x @ torch.tensor([[1.0], [-0.5], [0.3], [2.0]]) + 0.7 + 0.5 * torch.randn(n, 1, generator=g)
    model = nn.Linear(4, 1)
    X = torch.cat([x, torch.ones(n, 1)], 1).double()
    w = torch.linalg.lstsq(X, y.double()).solution
    with torch.no_grad():
        model.weight.copy_(w[:4].T.float())
        model.bias.copy_(w[4].float())
    return model, x, y


def _block_se(z: np.ndarray, burn_in: int, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Variance per coordinate around the grand mean, and its batch-means standard error."""
    z = z[:, burn_in:]
    b = z.shape[1] // blocks
    sq = (z[:, : b * blocks] - z[:, burn_in:].reshape(-1, z.shape[-1]).mean(0)) ** 2
    per_block = sq.reshape(z.shape[0] * blocks, b, -1).mean(1)
    return per_block.mean(0), per_block.std(0, ddof=1) / math.sqrt(len(per_block))


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_prediction_matches_a_long_continuation_on_an_exact_quadratic(kind):
    model, x, y = _regression()
    # small steps: the per-sample noise grows with the distance from the minimum (multiplicative
    # noise, outside the model) by about eta tr(H) / (1 - momentum) relative to the additive part
    if kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(5)
        for _ in range(2000):  # second moments settle at the optimum; then frozen
            idx = torch.randint(len(x), (8,), generator=g)
            opt.zero_grad()
            ((model(x[idx]) - y[idx]) ** 2).mean().backward()
            opt.step()
    dyn = optimizer_dynamics(opt, model)
    assert dyn.kind == kind
    local = fit_local_model(model, opt, x, y, batch_size=8, k=3, gamma=0.05, seed=0)
    assert local.stable
    if kind == "sgd":
        np.testing.assert_allclose(local.eigenvalues, [8.0, 3.92, 2.0], rtol=0.1)
    cont = continue_training(model, opt, x, y, local, steps=12000, chains=2, seed=1)
    for z, P in ((cont.z, local.raw_cov), (cont.z_ema, local.ema_cov)):
        v, se = _block_se(z, 500, 40)
        pred = np.diag(P)
        assert np.all(se < 0.1 * pred), (se, pred)  # the comparison has power
        assert np.all(np.abs(v - pred) < 4 * se), (kind, v, pred, se)


def test_continuation_leaves_model_and_optimizer_as_they_were():
    model, x, y = _regression(1, 200)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    local = fit_local_model(model, opt, x, y, batch_size=4, k=2, gamma=0.1, seed=0)
    before = flat_parameters(model).clone()
    a = continue_training(model, opt, x, y, local, steps=20, chains=2, seed=7, keep=[0, 5])
    b = continue_training(model, opt, x, y, local, steps=20, chains=2, seed=7, keep=[0, 5])
    assert torch.equal(flat_parameters(model), before)
    np.testing.assert_array_equal(a.z, b.z)  # seeded
    assert not np.array_equal(a.z[0], a.z[1])  # chains differ
    np.testing.assert_allclose(a.kept_raw[:, 0], np.broadcast_to(before.numpy(), a.kept_raw[:, 0].shape))
    np.testing.assert_allclose(a.z[:, 0], 0.0)
    # the recorded coordinates are the kept vectors' projections
    z5 = (a.kept_raw[:, 1].astype(np.float64) - before.double().numpy()) @ local.coords
    np.testing.assert_allclose(z5, a.z[:, 5], atol=1e-6)


def test_noise_from_a_subset_keeps_the_full_gradient_mean():
    model, x, y = _regression(2, 300)
    with torch.no_grad():
        model.bias.add_(0.3)  # off the minimum: a nonzero mean offset
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    # k=3 holds the bias direction (curvature 2; the inputs are centred, so it is an eigenvector)
    full = fit_local_model(model, opt, x, y, batch_size=4, k=3, gamma=0.1, seed=0)
    part = fit_local_model(model, opt, x, y, batch_size=4, k=3, gamma=0.1, seed=0, noise_samples=100)
    assert part.noise_samples == 100 and full.noise_samples == 300
    np.testing.assert_allclose(part.mean, full.mean, rtol=1e-8)
    np.testing.assert_allclose(full.mean @ full.directions.T, [0.0] * 4 + [-0.3], atol=1e-6)  # Newton step


def test_bad_input_is_refused():
    model, x, y = _regression(1, 100)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="second moments"):
        fit_local_model(model, opt, x, y, batch_size=4, k=2, gamma=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, weight_decay=0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        fit_local_model(model, opt, x, y, batch_size=4, k=2, gamma=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(ValueError, match="k="):
        fit_local_model(model, opt, x, y, batch_size=4, k=5, gamma=0.1)
    with pytest.raises(ValueError, match="gamma"):
        fit_local_model(model, opt, x, y, batch_size=4, k=2, gamma=0.0)


def test_subspace_fraction():
    rng = np.random.default_rng(0)
    d, k = 6, 2
    U = np.linalg.qr(rng.standard_normal((d, d)))[0]
    s = rng.uniform(0.5, 2.0, d)
    local = LocalModel(
        np.ones(k), s[:, None] * U[:, :k], U[:, :k] / s[:, None], np.eye(k), np.zeros(k),
        0.1, 0.0, 1.0, 0.1, 1, "adam", np.zeros(d), 1, s,
    )  # fmt: skip
    inside = (s[:, None] * U[:, :k]) @ rng.standard_normal((k, 5))  # displacements theta = D^{1/2} U z
    outside = (s[:, None] * U[:, k:]) @ rng.standard_normal((d - k, 5))
    assert local.subspace_fraction(inside.T) == pytest.approx(1.0)
    assert local.subspace_fraction(outside.T) == pytest.approx(0.0, abs=1e-12)
    w_in, w_out = inside / s[:, None], outside / s[:, None]
    both = (inside + outside).T
    expect = (w_in**2).sum() / ((w_in + w_out) ** 2).sum()
    assert local.subspace_fraction(both) == pytest.approx(expect)


def _linear_model(eigenvalues: np.ndarray, *, gamma: float = 0.1) -> LocalModel:
    """Plain SGD (no momentum, eta 0.01) on a diagonal quadratic, an EMA of weight ``gamma``."""
    k = len(eigenvalues)
    return LocalModel(
        eigenvalues=np.asarray(eigenvalues, dtype=float), directions=np.eye(k), coords=np.eye(k),
        noise_cov=np.diag(np.linspace(1.0, 0.3, k)), mean=np.zeros(k), eta=0.01, beta=0.0, c=1.0,
        gamma=gamma, batch_size=1, optimizer="sgd", theta=np.zeros(k), noise_samples=1, scale=np.ones(k),
    )  # fmt: skip


@pytest.fixture(scope="module")
def linear_chains():
    """8 chains of 3000 steps of the recursion of a known model (spectrum 4 ... 1), started stationary."""
    true = _linear_model(np.geomspace(4.0, 1.0, 10))
    z, z_ema = true.sample_windows(8, 3000, seed=1)
    return true, z, z_ema


def test_local_model_verdicts_support_the_true_model(linear_chains):
    """Positive control: chains of the model's own recursion, judged against its own prediction."""
    from validation.studies import local_model as study

    true, z, z_ema = linear_chains
    cmp = study.compare(z, z_ema, true, burn_in=0)
    verdicts, rows = study.decide_groups(cmp, true)
    keys = [f"local-model/{w}-{g}" for w in ("raw", "ema") for g in ("1-2", "3-5", "6-10")]
    assert [v.rule for v in verdicts] == keys
    assert all(v.outcome == "supports" for v in verdicts), [v.detail for v in verdicts]
    assert all(i["n"] == 8 for v in verdicts for i in v.intervals)  # the unit is the chain
    assert all(math.isfinite(r["decides at (x)"]) and r["decides at (x)"] > 1 for r in rows)


def test_local_model_verdicts_contradict_a_spectrum_wrong_by_4x(linear_chains):
    """Negative control: the same chains against a model whose eigenvalues are 4x too large (it
    predicts about a quarter of the variance)."""
    from validation.studies import local_model as study

    true, z, z_ema = linear_chains
    wrong = _linear_model(4.0 * true.eigenvalues)
    verdicts, _ = study.decide_groups(study.compare(z, z_ema, wrong, burn_in=0), wrong)
    assert len(verdicts) == 6 and all(v.outcome == "contradicts" for v in verdicts), [v.detail for v in verdicts]


def test_local_model_verdicts_contradict_a_spectrum_wrong_by_4x_the_other_way(linear_chains):
    """Negative control below the region: eigenvalues 4x too small predict about 4x the variance."""
    from validation.studies import local_model as study

    true, z, z_ema = linear_chains
    wrong = _linear_model(true.eigenvalues / 4.0)
    verdicts, _ = study.decide_groups(study.compare(z, z_ema, wrong, burn_in=0), wrong)
    assert all(v.outcome == "contradicts" and v.intervals[0]["high"] < 0.5 for v in verdicts), [
        v.detail for v in verdicts
    ]


def test_local_model_verdicts_in_the_real_runs_regime():
    """Where the real run sits (the EMA's weight far below eta x curvature, so the EMA varies ~100x
    less than the raw iterate): the model's own chains support every rule; a slow random walk added
    to them (drift the model does not describe, small beside the raw fluctuation) leaves the raw
    rules supported and makes the EMA's contradict, as at the full budget's checkpoint."""
    from validation.studies import local_model as study

    true = _linear_model(np.geomspace(40.0, 10.0, 10), gamma=0.004)
    z, z_ema = true.sample_windows(8, 6000, seed=2)
    assert np.diag(true.ema_cov)[0] < 0.02 * np.diag(true.raw_cov)[0]
    verdicts, _ = study.decide_groups(study.compare(z, z_ema, true, burn_in=0), true)
    assert all(v.outcome == "supports" for v in verdicts), [v.detail for v in verdicts]
    walk = np.cumsum(np.random.default_rng(4).normal(0.0, 1e-4, z.shape), axis=1)
    verdicts, _ = study.decide_groups(study.compare(z + walk, z_ema + walk, true, burn_in=0), true)
    assert [v.outcome for v in verdicts] == ["supports"] * 3 + ["contradicts"] * 3, [v.detail for v in verdicts]


def test_stationarity_tells_drift_from_a_stationary_fluctuation(linear_chains):
    """The diagnostic beside the verdicts: the model's own chains keep their spread across chains
    and lose little to detrending; the same chains plus a slow random walk in every coordinate
    (drift the model does not describe) spread more by the end and lose most to detrending."""
    from validation.studies import local_model as study

    true, z, z_ema = linear_chains

    def table(z, z_ema):
        rows = study.stationarity(study.compare(z, z_ema, true, burn_in=0), z, z_ema, true, burn_in=0)
        return {(r["weights"], r["directions"]): r for r in rows}

    level = table(z, z_ema)
    assert len(level) == 6
    for r in level.values():
        assert r["ratio after removing each chain's trend"] == pytest.approx(1.0, abs=0.35)
    first = z[:, :750, :2].var(axis=0, ddof=1).mean(axis=0).sum() / np.diag(true.raw_cov)[:2].sum()
    assert level[("raw", "1-2")]["spread across chains, first quarter / predicted"] == pytest.approx(first)
    walk = np.cumsum(np.random.default_rng(3).normal(0.0, 0.05, z.shape), axis=1)
    zw, ew = z + walk, z_ema + walk  # the EMA of a slow walk is about the walk itself
    cmp = study.compare(zw, ew, true, burn_in=0)
    measured = {(w, f"{g[0] + 1}-{g[1]}"): r.ratio for w in ("raw", "ema") for g, r in zip(cmp["groups"], cmp[w])}
    for key, r in table(zw, ew).items():
        assert (
            r["spread across chains, last quarter / predicted"]
            > 5 * r["spread across chains, first quarter / predicted"]
        )
        assert r["ratio after removing each chain's trend"] < 0.5 * measured[key]


def test_variance_ratios_are_per_chain_and_refuse_bad_input(linear_chains):
    from gvaempirics.bc.local_model import variance_ratios

    true, z, _ = linear_chains
    pred = np.diag(true.raw_cov)
    (r,) = variance_ratios(z, pred, [(0, 2)], burn_in=100)
    tail = z[:, 100:, :2]
    by_hand = ((tail - tail.mean(axis=(0, 1))) ** 2).mean(axis=1).sum(axis=1) / pred[:2].sum()
    np.testing.assert_allclose(r.per_chain, by_hand)
    assert r.interval.n == 8 and r.ratio == pytest.approx(math.exp(np.log(by_hand).mean()))
    with pytest.raises(ValueError, match="burn_in"):
        variance_ratios(z, pred, [(0, 2)], burn_in=2999)
    with pytest.raises(ValueError, match="predicted_var"):
        variance_ratios(z, np.full(10, np.inf), [(0, 2)], burn_in=0)
    with pytest.raises(ValueError, match="group"):
        variance_ratios(z, pred, [(0, 11)], burn_in=0)


def test_bc_checkpoint_fit_and_rollout(tiny_bc_run):
    from gvaempirics.bc.envs import initial_conditions
    from gvaempirics.bc.local_model import continue_bc, fit_bc, load_checkpoint, rollout_vectors

    run, _ = tiny_bc_run
    ck = load_checkpoint(run, threads=1)
    local = fit_bc(ck, k=3, seed=0)
    assert local.optimizer == "adam" and local.eigenvalues.shape == (3,) and np.all(np.diff(local.eigenvalues) <= 0)
    cont = continue_bc(ck, local, steps=5, chains=1, seed=0, keep=[0, 5])
    ics = initial_conditions(ck.cfg.env, 2, ck.cfg.ic_seed)
    out = rollout_vectors(ck, cont.kept_raw[0], ics, [5, 20])
    assert out[5].shape == out[20].shape == (2, 2)
    # the checkpoint's own vector gives what the run's evaluator gives
    from gvaempirics.bc.train import imitator_rollout

    ref, _ = imitator_rollout(ck.cfg.replace(H=20), ics)(ck.model, [dict(ck.model.named_parameters())])
    np.testing.assert_allclose(out[20][0], ref[0], rtol=1e-6)
    with pytest.raises(ValueError, match="step=7"):
        load_checkpoint(run, 7)


def test_the_run_gamma_is_the_weight_the_run_averages_with(tiny_bc_run):
    import dataclasses

    from gvaempirics.bc.local_model import load_checkpoint

    ck = load_checkpoint(tiny_bc_run[0], threads=1)
    at = lambda **kw: dataclasses.replace(ck, cfg=ck.cfg.replace(**kw)).run_gamma()  # noqa: E731
    assert at(stabilizer="constant-ema", gamma_min=0.07, burn_in=0) == pytest.approx(0.07)
    assert at(stabilizer="constant-ema", gamma_min=0.07, burn_in=ck.step + 10) == 1.0  # burn-in: the iterate itself
    assert at(stabilizer="ema", alpha=0.5, gamma_min=1e-6, burn_in=0) == pytest.approx(ck.step**-0.5, rel=0.05)
    for name in ("polyak", "bema", "posthoc"):
        with pytest.raises(ValueError, match=f"stabilizer='{name}': give gamma"):
            at(stabilizer=name)


@pytest.fixture
def small_budgets(monkeypatch):
    """Both studies at a reduced budget (a shorter run, fewer directions, steps and rollouts)."""
    from validation.studies import local_model

    monkeypatch.setattr(
        local_model, "QUICK_RUN", {**local_model.QUICK_RUN, "n_demos": 2, "demo_horizon": 200, "steps": 400}
    )
    monkeypatch.setattr(
        local_model, "QUICK", local_model.Budget(k=5, chains=3, steps=160, keep=4, ics=2, H_short=10, H_long=40)
    )


def test_studies_return_sections_with_numbers(tmp_path, small_budgets):
    from validation.studies import local_model, reward_law

    s2 = local_model.run(tmp_path / "local-model", quick=True, seed=0, quiet=True)
    assert s2.key == "local-model" and [v.rule for v in s2.verdicts] == [
        f"local-model/{w}-{g}" for w in ("raw", "ema") for g in ("1-2", "3-5")
    ]
    for v in s2.verdicts:
        assert v.outcome in ("supports", "contradicts", "inconclusive")
        assert any(ch.isdigit() for ch in v.detail) and "[" in v.detail
    assert all(p.is_file() for p in s2.figures)
    s3 = reward_law.run(tmp_path / "reward-law", quick=True, seed=0, quiet=True)
    assert s3.key == "reward-law" and [v.rule for v in s3.verdicts] == [
        "reward-law/raw-spread",
        "reward-law/ema-spread",
        "reward-law/raw-flips",
        "reward-law/delta-short",
        "reward-law/delta-long-breaks",
    ]
    for v in s3.verdicts:
        assert any(ch.isdigit() for ch in v.detail)
    assert all(p.is_file() for p in s3.figures)
