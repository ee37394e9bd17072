"""Torch stabilizers against ema-pytorch, torch.optim.swa_utils, the BEMA references, the numpy
rules and by hand."""

import io
import re
from pathlib import Path

import bema_references as ref
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.optim.swa_utils import AveragedModel  # noqa: E402

from gvaempirics.stabilizers import BEMA, EMA, Polyak, PostHocEMA, Snapshot, synthesize  # noqa: E402
from gvatheory import stabilizers as numpy_rules  # noqa: E402
from gvatheory.schedules import BEMASchedule, ConstantEMA, PolyakEMA, PowerEMA  # noqa: E402
from gvatheory.stabilizers import PowerFunctionEMA, posthoc_coefficients, power_ema_weights, power_profile_inner  # noqa: E402


def mlp(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(dtype)


def perturb(model, gen):
    """One stand-in optimizer step: a seeded random move of every parameter."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype))


def params_close(a: dict, b: dict, **tol):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], **tol)


# ---------------------------------------------------------------- against ema-pytorch


@pytest.mark.parametrize("update_after_step", [0, 3])
def test_constant_ema_matches_ema_pytorch_bit_for_bit(update_after_step):
    ema_pytorch = pytest.importorskip("ema_pytorch")
    model, gen = mlp(), torch.Generator().manual_seed(1)
    # inv_gamma -> 0 turns ema-pytorch's warmup off: its decay is clamped to beta at once.
    # ema-pytorch copies while step <= update_after_step, i.e. our burn_in.
    theirs = ema_pytorch.EMA(
        model, beta=0.875, update_after_step=update_after_step, update_every=1, inv_gamma=1e-9, power=1.0
    )
    ours = EMA(model, ConstantEMA(0.125, burn_in=update_after_step))
    for _ in range(10):
        perturb(model, gen)
        theirs.update()
        ours.update()
        # 0.875 is exact in float32 and both use lerp with weight 0.125: identical bits
        params_close(ours.averaged_parameters(), dict(theirs.ema_model.named_parameters()), rtol=0, atol=0)


@pytest.fixture
def float64_default():
    """torch's default dtype float64, under which ema-pytorch computes its decay in float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


class Vector(nn.Module):
    """One float64 parameter vector, set to each iterate of a trajectory in turn."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim, dtype=torch.float64))

    def set(self, theta: np.ndarray) -> None:
        with torch.no_grad():
            self.w.copy_(torch.from_numpy(theta))


# ema-pytorch settings: its defaults (u = 100, every 10 steps), a restart of the power clock at
# u = 100 (the 0.11 gap), a period with an off-grid u, inv_gamma, min_value, power > 1
# and beta = 1 (frozen after the burn-in copies)
EMA_PYTORCH_GRID = [
    dict(),
    dict(beta=0.99, update_after_step=0, update_every=1),
    dict(beta=0.995, update_after_step=100, update_every=1, power=0.5),
    dict(beta=0.9, update_after_step=7, update_every=4, inv_gamma=7.5, power=0.75, min_value=0.05),
    dict(beta=0.95, update_after_step=3, update_every=1, power=1.5),
    dict(beta=1.0, update_after_step=5, update_every=3),
]


def _against_ema_pytorch(settings: dict, thetas: np.ndarray) -> tuple[float, float]:
    """Largest difference of our torch and numpy EMAs from ema-pytorch's over a trajectory."""
    ema_pytorch = pytest.importorskip("ema_pytorch")
    model = Vector(thetas.shape[1])
    theirs = ema_pytorch.EMA(model, **settings)
    ours = EMA.from_ema_pytorch(model, **settings)
    rule = numpy_rules.EMA.from_ema_pytorch(**settings)
    state = rule.init(thetas[0])
    err_torch = err_numpy = 0.0
    for theta in thetas:
        model.set(theta)
        theirs.update()
        ours.update()
        state = rule.update(state, theta)
        want = theirs.ema_model.w.detach().numpy()
        err_torch = max(err_torch, float(np.abs(ours.averaged_parameters()["w"].numpy() - want).max()))
        err_numpy = max(err_numpy, float(np.abs(rule.value(state) - want).max()))
    return err_torch, err_numpy


@pytest.mark.parametrize("settings", EMA_PYTORCH_GRID, ids=lambda s: ref.grid_id(s) or "defaults")
def test_from_ema_pytorch_matches_ema_pytorch(settings, float64_default):
    thetas = ref.trajectory(160)
    err_torch, err_numpy = _against_ema_pytorch(settings, thetas)
    # the decays are the same float64 numbers up to a rounding (1 - (1 - g) vs g)
    assert err_torch <= 1e-12 * np.abs(thetas).max()
    assert err_numpy <= 1e-12 * np.abs(thetas).max()


def test_ema_pytorch_rounds_its_decay_to_float32_under_the_default_dtype():
    thetas = ref.trajectory(160)
    err_torch, _ = _against_ema_pytorch(dict(beta=0.99, update_after_step=0, update_every=1), thetas)
    # its decay is a float32 tensor (relative rounding 6e-8 per step): about 1e-7 apart
    assert 1e-10 * np.abs(thetas).max() < err_torch < 1e-6 * np.abs(thetas).max()


def test_nominal_power_ema_is_not_ema_pytorchs_warmup(float64_default):
    ema_pytorch = pytest.importorskip("ema_pytorch")
    thetas = ref.trajectory(160)
    model = Vector(thetas.shape[1])
    theirs = ema_pytorch.EMA(model, beta=0.995, update_after_step=100, update_every=1, power=0.5)
    # the same nominal numbers on our absolute clock: gamma_t = max(t^-0.5, 0.005) after t = 100
    nominal = EMA(model, PowerEMA(alpha=0.5, gamma_min=0.005, burn_in=100))
    gap = 0.0
    for theta in thetas:
        model.set(theta)
        theirs.update()
        nominal.update()
        gap = max(gap, float((nominal.averaged_parameters()["w"] - theirs.ema_model.w).abs().max()))
    assert gap > 1e-2 * np.abs(thetas).max()


def test_ema_pytorch_post_hoc_trackers_count_theta0_twice(float64_default):
    pytest.importorskip("ema_pytorch")
    from ema_pytorch.post_hoc_ema import KarrasEMA

    thetas = ref.trajectory(60)
    model = Vector(thetas.shape[1])
    theirs = KarrasEMA(model, sigma_rel=0.1, update_every=1)
    for theta in thetas:
        model.set(theta)
        theirs.update()
    rule = numpy_rules.EMA(PowerFunctionEMA(0.1))

    def tracked(sequence):
        state = rule.init(sequence[0])
        for theta in sequence:
            state = rule.update(state, theta)
        return rule.value(state)

    got = theirs.ema_model.w.detach().numpy()
    scale = np.abs(thetas).max()
    # its first update copies theta_0 and then averages theta_0 in again with beta = (1/2)^(1+g)
    assert np.abs(got - tracked([thetas[0], *thetas])).max() <= 1e-12 * scale
    assert np.abs(got - tracked(thetas)).max() > 1e-3 * scale


def test_synthesis_matches_ema_pytorch_on_the_same_snapshots(tmp_path, float64_default):
    pytest.importorskip("ema_pytorch")
    from ema_pytorch import PostHocEMA as TheirPostHocEMA

    thetas = ref.trajectory(100)
    model = Vector(thetas.shape[1])
    theirs = TheirPostHocEMA(
        model,
        sigma_rels=(0.05, 0.1),
        update_every=1,
        checkpoint_every_num_steps=10,
        checkpoint_folder=str(tmp_path),
        checkpoint_dtype=torch.float64,
    )
    for theta in thetas:
        model.set(theta)
        theirs.update()
    snapshots = []
    for file in sorted(tmp_path.glob("*.pt")):
        index, step = map(int, file.stem.split("."))
        snapshots.append(Snapshot(step, (0.05, 0.1)[index], {"w": torch.load(file)["ema_model.w"]}))
    scale = np.abs(thetas).max()
    # at the latest snapshot both use every snapshot; off the grid (35) ema-pytorch also uses the
    # later ones, which is our causal=False
    for step, causal in [(100, True), (35, False)]:
        want = theirs.synthesize_ema_model(sigma_rel=0.07, step=step).ema_model.w.detach().numpy()
        got = synthesize(snapshots, 0.07, count=step, causal=causal, max_residual=None).params["w"].numpy()
        # lstsq against their solve of the same normal equations (condition number about 1e3)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * scale)


# ---------------------------------------------------------------- against the BEMA references


def _bema_values(stab: BEMA, model: Vector, thetas: np.ndarray) -> list[np.ndarray]:
    values = []
    for theta in thetas:
        model.set(theta)
        stab.update()
        values.append(stab.averaged_parameters()["w"].numpy())
    return values


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "reference"])
@pytest.mark.parametrize("settings", ref.AUTHORS_GRID, ids=ref.grid_id)
def test_bema_from_authors_matches_their_rule(settings, foreach):
    thetas = ref.trajectory(120)
    model = Vector(thetas.shape[1])
    got = _bema_values(BEMA.from_authors(model, foreach=foreach, **settings), model, thetas)
    want = ref.authors_offline(thetas, **settings)
    assert max(np.abs(got[s] - w).max() for s, w in want.items()) <= 1e-12 * np.abs(thetas).max()


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "reference"])
@pytest.mark.parametrize("settings", ref.TRL_GRID, ids=ref.grid_id)
def test_bema_from_trl_matches_its_rule(settings, foreach):
    thetas = ref.trajectory(120)
    model = Vector(thetas.shape[1])
    got = _bema_values(BEMA.from_trl(model, foreach=foreach, **settings), model, thetas)
    want = ref.trl_callback(thetas, **settings)
    assert len(want) > 20
    assert max(np.abs(got[s] - w).max() for s, w in want.items()) <= 1e-12 * np.abs(thetas).max()


# ---------------------------------------------------------------- against swa_utils


@pytest.mark.parametrize("burn_in", [0, 4])
def test_polyak_matches_swa_averaged_model(burn_in):
    model, gen = mlp(torch.float64), torch.Generator().manual_seed(3)
    swa = AveragedModel(model)
    ours = Polyak(model, burn_in=burn_in)
    for t in range(15):
        perturb(model, gen)
        ours.update()
        if t >= burn_in:
            swa.update_parameters(model)
            params_close(ours.averaged_parameters(), dict(swa.module.named_parameters()), rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------- against the numpy rules


RULES = [
    (
        "constant",
        lambda m, f: EMA(m, ConstantEMA(0.3, burn_in=2), foreach=f),
        numpy_rules.EMA(ConstantEMA(0.3, burn_in=2)),
    ),
    (
        "power",
        lambda m, f: EMA(m, PowerEMA(0.7, gamma_min=0.2, burn_in=1), foreach=f),
        numpy_rules.EMA(PowerEMA(0.7, gamma_min=0.2, burn_in=1)),
    ),
    ("polyak", lambda m, f: Polyak(m, burn_in=3, foreach=f), numpy_rules.EMA(PolyakEMA(burn_in=3))),
    ("power-function", lambda m, f: EMA(m, PowerFunctionEMA(0.1), foreach=f), numpy_rules.EMA(PowerFunctionEMA(0.1))),
    (
        "bema",
        lambda m, f: BEMA(m, BEMASchedule(lag=2, burn_in=2), foreach=f),
        numpy_rules.BEMA(BEMASchedule(lag=2, burn_in=2)),
    ),
    (
        "power-every-3",
        lambda m, f: EMA(m, PowerEMA(0.7, gamma_min=0.2, burn_in=4, t0=2.5, origin=4), foreach=f, every=3),
        numpy_rules.EMA(PowerEMA(0.7, gamma_min=0.2, burn_in=4, t0=2.5, origin=4), every=3),
    ),
    (
        "bema-every-2-authors",
        lambda m, f: BEMA(
            m, BEMASchedule(c=2.0, lag=1.5, burn_in=4, correction_c=False, seeded_burn_in=True), foreach=f, every=2
        ),
        numpy_rules.BEMA(BEMASchedule(c=2.0, lag=1.5, burn_in=4, correction_c=False, seeded_burn_in=True), every=2),
    ),
]


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "reference"])
@pytest.mark.parametrize("name,make,rule", RULES, ids=[r[0] for r in RULES])
def test_torch_matches_numpy_rule_every_step(name, make, rule, foreach):
    model = mlp(torch.float64)
    stab = make(model, foreach)
    rng = np.random.default_rng(4)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    state = None
    for _ in range(12):
        theta = {n: rng.normal(size=s) for n, s in shapes.items()}
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(torch.from_numpy(theta[n]))
        stab.update()
        state = rule.update(state if state is not None else rule.init(theta), theta)
        want = rule.value(state)
        got = stab.averaged_parameters()
        for n in shapes:
            np.testing.assert_allclose(got[n].numpy(), want[n], rtol=1e-12, atol=1e-12)


def test_half_precision_parameters_are_averaged_in_float32():
    model, gen = mlp(torch.bfloat16), torch.Generator().manual_seed(5)
    ema = EMA(model, 1e-3)
    ref = None
    for _ in range(20):
        perturb(model, gen)
        ema.update()
        theta = model[0].weight.detach().double()
        ref = theta if ref is None else 0.999 * ref + 1e-3 * theta
    assert all(a.dtype == torch.float32 for a in ema.average)
    # float32 keeps the 1e-3 increments that a bf16 average (8 mantissa bits) would round away
    torch.testing.assert_close(ema.average[0].double(), ref, rtol=1e-5, atol=1e-6)
    assert all(v.dtype == torch.bfloat16 for v in ema.averaged_parameters().values())


# ---------------------------------------------------------------- evaluation helpers, buffers


def test_buffers_are_copied_not_averaged_and_swap_restores():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))
    ema, gen = EMA(model, 0.5), torch.Generator().manual_seed(6)
    for _ in range(4):
        model(torch.randn(16, 4, generator=gen))  # moves BatchNorm running statistics
        perturb(model, gen)
        ema.update()
    avg = ema.averaged_parameters()
    copy = ema.averaged_model()
    for name, buf in model.named_buffers():
        assert torch.equal(dict(copy.named_buffers())[name], buf)
    for name, value in avg.items():
        assert torch.equal(dict(copy.named_parameters())[name], value)
        assert not dict(copy.named_parameters())[name].requires_grad
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="inside"):
        with ema.swap() as swapped_model:
            assert swapped_model is model
            params_close(dict(model.named_parameters()), avg, rtol=0, atol=0)
            raise RuntimeError("inside")
    params_close({n: p.detach() for n, p in model.named_parameters()}, before, rtol=0, atol=0)


def test_bad_input_raises_value_error():
    model = mlp()
    with pytest.raises(ValueError, match="count=0"):
        EMA(model, 0.1).averaged_parameters()
    with pytest.raises(ValueError, match="nn.Module"):
        EMA(object(), 0.1)
    with pytest.raises(ValueError, match="BEMASchedule"):
        BEMA(model, PowerEMA(0.5))
    with pytest.raises(ValueError, match="rule"):
        EMA(model, 0.2).load_state_dict(EMA(model, 0.1).state_dict())
    with pytest.raises(ValueError, match=r"rule.*every=2"):
        EMA(model, 0.1).load_state_dict(EMA(model, 0.1, every=2).state_dict())
    with pytest.raises(ValueError, match="every=0 is out of range"):
        BEMA(model, every=0)
    with pytest.raises(ValueError, match="snapshot_every"):
        PostHocEMA(model, snapshot_every=0)


# ---------------------------------------------------------------- exact resume


STABILIZERS = {
    "ema": lambda m: EMA(m, PowerEMA(0.6, gamma_min=0.05, burn_in=2)),
    "polyak": lambda m: Polyak(m, burn_in=1),
    "bema": lambda m: BEMA(m, BEMASchedule(burn_in=3)),
    "bema-every-3": lambda m: BEMA(m, BEMASchedule(burn_in=3), every=3),
    "posthoc": lambda m: PostHocEMA(m, (0.05, 0.1), snapshot_every=3),
}


@pytest.mark.parametrize("kind", list(STABILIZERS))
def test_state_dict_round_trip_resumes_bit_identically(kind):
    make = STABILIZERS[kind]
    model, gen = mlp(), torch.Generator().manual_seed(7)
    straight = make(model)
    for _ in range(7):
        perturb(model, gen)
        straight.update()
    # "process dies" here: model, generator and stabilizer go through a checkpoint file
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "stab": straight.state_dict(), "gen": gen.get_state()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    resumed_model = mlp(seed=123)
    resumed_model.load_state_dict(ckpt["model"])
    resumed = make(resumed_model)
    resumed.load_state_dict(ckpt["stab"])
    gen2 = torch.Generator()
    gen2.set_state(ckpt["gen"])
    for _ in range(6):
        perturb(model, gen)
        straight.update()
        perturb(resumed_model, gen2)
        resumed.update()
    if kind == "posthoc":
        a, b = (
            straight.averaged_parameters(0.07, max_residual=None),
            resumed.averaged_parameters(0.07, max_residual=None),
        )
        assert [s.count for s in straight.snapshots] == [s.count for s in resumed.snapshots]
    else:
        a, b = straight.averaged_parameters(), resumed.averaged_parameters()
    params_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------- post-hoc EMA


class Weights(nn.Module):
    """A single parameter vector: fed the iterates theta_t = e_t, an average *is* its weights."""

    def __init__(self, n: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n, dtype=torch.float64))


def one_hot_run(n, stabilizers):
    model = Weights(n)
    stabs = [make(model) for make in stabilizers]
    for t in range(n):
        with torch.no_grad():
            model.w.zero_()
            model.w[t] = 1.0
        for s in stabs:
            s.update()
    return stabs


def test_posthoc_synthesis_of_a_tracked_profile_reproduces_it():
    model, gen = mlp(), torch.Generator().manual_seed(8)
    ph = PostHocEMA(model, (0.05, 0.10), snapshot_every=10)
    for _ in range(60):
        perturb(model, gen)
        ph.update()
    tracked = next(s for s in ph.snapshots if s.count == 40 and s.sigma_rel == 0.10)
    # coefficients are e_i up to the lstsq round-off (~1e-9), float32 snapshots
    params_close(ph.averaged_parameters(0.10, count=40), tracked.params, rtol=1e-5, atol=1e-5)


def test_posthoc_synthesized_ema_matches_directly_tracked_one():
    n, every, sigma = 400, 20, 0.07
    ph, direct = one_hot_run(
        n, [lambda m: PostHocEMA(m, (0.05, 0.10), snapshot_every=every), lambda m: EMA(m, PowerFunctionEMA(sigma))]
    )
    w_direct = direct.averaged_parameters()["w"].numpy()
    np.testing.assert_allclose(w_direct, power_ema_weights(n, sigma), rtol=1e-10, atol=1e-15)
    w_syn = ph.averaged_parameters(sigma)["w"].numpy()
    err = np.linalg.norm(w_syn - w_direct) / np.linalg.norm(w_direct)
    # the continuous least-squares residual of EDM2's fit, relative to |p_out|
    counts = [s.count for s in ph.snapshots]
    sigmas = [s.sigma_rel for s in ph.snapshots]
    x = posthoc_coefficients(counts, sigmas, n, sigma)
    gram = power_profile_inner(
        np.array(counts)[:, None], np.array(sigmas)[:, None], np.array(counts)[None], np.array(sigmas)[None]
    )
    rhs = power_profile_inner(np.array(counts), np.array(sigmas), n, sigma)
    norm2 = power_profile_inner(n, sigma, n, sigma)
    residual = np.sqrt((norm2 - 2 * x @ rhs + x @ gram @ x) / norm2)
    # 20 snapshots per profile fit sigma_rel = 0.07 to 0.25% in L2; the discrete iterates add an
    # O(1/n) discretization error on top
    assert residual < 5e-3
    assert abs(err - residual) < 1.0 / n


def test_synthesize_uses_only_snapshots_up_to_count():
    (ph,) = one_hot_run(100, [lambda m: PostHocEMA(m, (0.05, 0.10), snapshot_every=25)])
    w = synthesize(ph.snapshots, 0.10, count=50).params["w"].numpy()
    assert np.all(w[50:] == 0.0)  # no later iterate can leak into an earlier EMA
    with pytest.raises(ValueError, match="count=10"):
        synthesize(ph.snapshots, 0.10, count=10)


def test_off_grid_synthesis_is_refused_or_matches_a_directly_tracked_ema():
    """The issue's case: snapshots every 50 updates, an EMA asked for at count 130. Before the fix
    the fit from the snapshots at 50 and 100 was returned silently (weights summing to 0.04)."""
    n, sigma = 200, 0.05
    model = Weights(n)
    ph = PostHocEMA(model, (0.05, 0.10), snapshot_every=50)
    direct = EMA(model, PowerFunctionEMA(sigma))
    tracked = {}
    for t in range(n):
        with torch.no_grad():
            model.w.zero_()
            model.w[t] = 1.0  # theta_t = e_t: an average *is* its weights on the iterates
        ph.update()
        direct.update()
        tracked[direct.count] = direct.averaged_parameters()["w"].numpy()
    with pytest.raises(ValueError, match=r"count=130, sigma_rel=0.05: .* residual of 0.99\d* > max_residual=0.1"):
        ph.averaged_parameters(sigma, count=130)
    with pytest.raises(ValueError, match=r"count=230.*residual"):
        ph.averaged_parameters(sigma, count=230)  # beyond the latest snapshot
    # accepted on request, the residual tells how far the result is from the tracked EMA: the
    # relative L2 error of the weights is the profile residual up to the O(1/n) discretization
    for count, width in [(130, 0.05), (130, 0.10), (101, 0.10), (150, 0.07)]:
        syn = ph.synthesize(width, count=count, max_residual=None)
        want = power_ema_weights(count, width)
        if width == sigma:
            np.testing.assert_allclose(want, tracked[count][:count], rtol=1e-10, atol=1e-15)
        got = syn.params["w"].numpy()
        assert np.all(got[count:] == 0.0)  # no later iterate leaks in
        err = np.linalg.norm(got[:count] - want) / np.linalg.norm(want)
        assert abs(err - syn.residual) < 1.0 / n, (count, width, err, syn.residual)
    bad = ph.synthesize(sigma, count=130, max_residual=None)
    assert bad.residual > 0.99 and abs(bad.coefficients.sum()) < 0.1 and bad.counts == (50, 50, 100, 100)
    # on the grid the same request is the tracked EMA, residual ~0
    good = ph.synthesize(sigma, count=150)
    assert good.residual < 1e-6
    np.testing.assert_allclose(good.params["w"].numpy(), tracked[150], rtol=0, atol=1e-9)


def test_rule_strings_of_existing_checkpoints_are_unchanged():
    model = mlp()
    # checkpoints written before the update period and the new schedule options must still load
    assert (
        EMA(model, PowerEMA(0.6, 0.05, 2)).state_dict()["rule"] == "EMA(PowerEMA(alpha=0.6, gamma_min=0.05, burn_in=2))"
    )
    assert BEMA(model, BEMASchedule(burn_in=3)).state_dict()["rule"] == (
        "BEMA(BEMASchedule(kappa=0.5, p=0.2, c=1.0, lag=10, gamma_min=0.0, burn_in=3))"
    )


# ---------------------------------------------------------------- docs


def test_docs_coming_from_examples_run():
    """The examples of the "Coming from other libraries" section of docs/stabilizers.md run and
    their assertions hold."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "stabilizers.md").read_text()
    section = page.split("## Coming from other libraries", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, "docs/stabilizers.md", "exec"), {})


# ---------------------------------------------------------------- from a run configuration


def test_make_stabilizer_builds_the_named_rule_from_options():
    from gvaempirics.config import STABILIZERS as NAMES
    from gvaempirics.config import StabilizerOptions
    from gvaempirics.stabilizers import make_stabilizer

    model, gen = mlp(), torch.Generator().manual_seed(3)
    opts = dict(alpha=0.6, gamma_min=0.1, burn_in=2, posthoc_sigma_rels=(0.1, 0.2), posthoc_every=3)
    built = {name: make_stabilizer(StabilizerOptions(stabilizer=name, **opts), model) for name in NAMES}
    twins = {
        "ema": EMA(model, PowerEMA(0.6, 0.1, 2)),
        "constant-ema": EMA(model, ConstantEMA(0.1, 2)),
        "polyak": Polyak(model, burn_in=2),
        "bema": BEMA(model, BEMASchedule(gamma_min=0.1, burn_in=2)),
        "posthoc": EMA(model, PowerFunctionEMA(0.1)),
    }  # evaluated online as its first tracked profile
    for _ in range(7):
        perturb(model, gen)
        for stab in (*built.values(), *twins.values()):
            stab.update()
    for name in NAMES:
        params_close(built[name].averaged_parameters(), twins[name].averaged_parameters(), rtol=0, atol=0)
    post = built["posthoc"]
    assert [s.count for s in post.snapshots] == [3, 3, 6, 6]
    post.snapshot()
    post.snapshot()  # a second call at the same count adds nothing
    assert [s.count for s in post.snapshots] == [3, 3, 6, 6, 7, 7]
    with pytest.raises(ValueError, match="stabilizer"):
        StabilizerOptions(stabilizer="swa")
    with pytest.raises(ValueError, match="posthoc_sigma_rels"):
        StabilizerOptions(posthoc_sigma_rels=(0.1, 0.3))


def test_weight_schedule_maps_gamma_min_once():
    """The field ``gamma_min``: floor of the power EMA and of BEMA, the constant EMA's gamma;
    the rule strings are those of checkpoints written before the mapping had a name."""
    from gvaempirics.config import StabilizerOptions
    from gvaempirics.stabilizers import weight_schedule

    def schedule(name):
        return weight_schedule(StabilizerOptions(stabilizer=name, alpha=0.6, gamma_min=0.1, burn_in=2))

    assert repr(schedule("ema")) == "PowerEMA(alpha=0.6, gamma_min=0.1, burn_in=2)"
    assert schedule("constant-ema") == ConstantEMA(gamma=0.1, burn_in=2)
    assert schedule("polyak") == PolyakEMA(burn_in=2)
    assert repr(schedule("bema")) == "BEMASchedule(kappa=0.5, p=0.2, c=1.0, lag=10, gamma_min=0.1, burn_in=2)"
    assert schedule("posthoc") is None
    assert schedule("ema")(10**6) == schedule("bema")(10**6) == schedule("constant-ema")(10**6) == 0.1
