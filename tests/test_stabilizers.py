"""Torch stabilizers against ema-pytorch, torch.optim.swa_utils, the numpy rules and by hand."""

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.optim.swa_utils import AveragedModel  # noqa: E402

from gvaempirics.stabilizers import BEMA, EMA, Polyak, PostHocEMA, synthesize  # noqa: E402
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


def test_power_ema_matches_ema_pytorch_warmup():
    ema_pytorch = pytest.importorskip("ema_pytorch")
    model, gen = mlp(torch.float64), torch.Generator().manual_seed(2)
    # ema-pytorch: gamma_k = max((1 + k - update_after_step)^-power, 1 - beta) after copying for
    # k <= update_after_step; with update_after_step = 1 this is PowerEMA(power, 1-beta, burn_in=1).
    theirs = ema_pytorch.EMA(model, beta=0.99, update_after_step=1, update_every=1, inv_gamma=1.0, power=0.5)
    ours = EMA(model, PowerEMA(alpha=0.5, gamma_min=0.01, burn_in=1))
    for _ in range(60):
        perturb(model, gen)
        theirs.update()
        ours.update()
        ref = dict(theirs.ema_model.named_parameters())
        scale = max(v.abs().max().item() for v in ref.values())
        # ema-pytorch computes its decay in float32 (relative error 6e-8 per step); our float64
        # average may differ by that rounding accumulated over the steps, far below 1e-6 * scale.
        params_close(ours.averaged_parameters(), ref, rtol=0, atol=1e-6 * scale)


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
    with pytest.raises(ValueError, match="snapshot_every"):
        PostHocEMA(model, snapshot_every=0)


# ---------------------------------------------------------------- exact resume


STABILIZERS = {
    "ema": lambda m: EMA(m, PowerEMA(0.6, gamma_min=0.05, burn_in=2)),
    "polyak": lambda m: Polyak(m, burn_in=1),
    "bema": lambda m: BEMA(m, BEMASchedule(burn_in=3)),
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
        a, b = straight.averaged_parameters(0.07), resumed.averaged_parameters(0.07)
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
    w = synthesize(ph.snapshots, 0.10, count=50)["w"].numpy()
    assert np.all(w[50:] == 0.0)  # no later iterate can leak into an earlier EMA
    with pytest.raises(ValueError, match="count=10"):
        synthesize(ph.snapshots, 0.10, count=10)


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
