"""Ensembles (gvaempirics.bc.ensemble): members equal their single runs, step by step and end to end.

Tolerances. The optimizers are compared step by step on the same gradients: the reference path
(``fused=False``, torch's per-tensor loop on row views) is bit-identical to a separate module's
optimizer; torch's fused kernel rounds differently, within ``rtol=1e-5, atol=1e-7`` after 30
steps (measured: at most 3e-8 absolute). End to end, a member's vmapped forward and backward also
round differently from the single model's matmuls; over the 30 steps of the tiny configuration
below the relative differences measured are at most 2e-7 for the losses and 2e-7 for the returns
(H=40). The tests ask for ``rtol=1e-5`` on losses and ``1e-4`` on returns: Hopper's closed loop
can amplify a 1e-7 change of the policy over the horizon (the effect this toolkit measures), so
returns get a looser bound, and a short horizon keeps that amplification small.
"""

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from gvaempirics.bc.config import PRESETS, BCConfig
from gvaempirics.bc.ensemble import MemberOptimizers, check_ensemble, stack_parameters, train_ensemble
from gvaempirics.bc.imitators import ImitatorSpec, make_imitator
from gvaempirics.bc.train import train_bc
from gvaempirics.rundir import RunDir, load_torch_file
from gvaempirics.training import make_optimizer

TINY = {
    **PRESETS["tiny"],
    "steps": 30,
    "demo_horizon": 60,
    "H": 40,
    "ics": 3,
    "eval_every": 10,
    "zoom_windows": (20,),
    "zoom_length": 4,
    "checkpoint_every": 10,
    "threads": 1,
}
# seeds and etas, plus members that change other per-member values (optimizer, clip, stabilizer)
MEMBERS = [
    {"seed": 1, "eta": 1e-3},
    {"seed": 2, "eta": 3e-3},
    {"seed": 3, "eta": 3e-4},
    {"seed": 4, "optimizer": "adamw", "weight_decay": 1e-2, "grad_clip": 0.5, "beta2": 0.99, "stabilizer": "bema"},
    {"seed": 5, "optimizer": "sgd", "eta": 1e-2, "momentum": 0.8, "stabilizer": "polyak", "alpha": 0.7},
    {"seed": 6, "stabilizer": "posthoc", "posthoc_sigma_rels": (0.05, 0.2), "posthoc_zoom": "rollout"},
]
LOSS_RTOL, RETURN_RTOL = 1e-5, 1e-4


def records(out) -> list[dict]:
    return list(RunDir(out).metrics())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One demonstration cache; each member trained alone and all of them as one ensemble."""
    from gvaempirics.bc.data import load_or_make
    from gvaempirics.bc.experts import load_expert

    root = tmp_path_factory.mktemp("ensemble")
    base = BCConfig(**TINY)
    expert, info = load_expert(base.env, None)
    load_or_make(root / "demos.npz", expert, **base.demo_settings(), expert_info=info)
    cfgs = [base.replace(demos=str(root / "demos.npz"), **m) for m in MEMBERS]
    singles = [root / f"single{k}" for k in range(len(cfgs))]
    for cfg, out in zip(cfgs, singles):
        train_bc(cfg, out, quiet=True)
    members = [root / f"member{k}" for k in range(len(cfgs))]
    summaries = train_ensemble(cfgs, members, quiet=True)
    return cfgs, singles, members, summaries


# ---------------------------------------------------------------- compatibility


def test_members_may_differ_only_in_member_fields():
    base = BCConfig(**TINY)
    check_ensemble([base.replace(**m) for m in MEMBERS])
    with pytest.raises(ValueError, match=r"cfgs\[1\]\.width=64 differs from cfgs\[0\]\.width=32"):
        check_ensemble([base, base.replace(width=64)])
    with pytest.raises(ValueError, match=r"cfgs\[2\]\.batch_size"):
        check_ensemble([base, base, base.replace(batch_size=16)])
    with pytest.raises(ValueError, match=r"cfgs\[1\]\.H=50"):
        check_ensemble([base, base.replace(H=50)])
    with pytest.raises(ValueError, match=r"cfgs\[0\]\.dropout=0\.1 is out of range"):
        check_ensemble([base.replace(dropout=0.1)])
    with pytest.raises(ValueError, match="at least one member"):
        check_ensemble([])


def test_bad_ensembles_are_refused_before_any_directory_is_made(tmp_path):
    base = BCConfig(**TINY)
    with pytest.raises(ValueError, match="len\\(outs\\)=1 must equal len\\(cfgs\\)=2"):
        train_ensemble([base, base.replace(seed=2)], [tmp_path / "a"], quiet=True)
    with pytest.raises(ValueError, match="names a run directory twice"):
        train_ensemble([base, base.replace(seed=2)], [tmp_path / "a", tmp_path / "a"], quiet=True)
    with pytest.raises(ValueError, match="demo_horizon"):
        train_ensemble([base, base.replace(demo_horizon=50)], [tmp_path / "a", tmp_path / "b"], quiet=True)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the optimizers, step by step


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_member_optimizers_match_torch_on_single_models(kind, fused):
    """Members with their own eta, betas/momentum, weight decay and clip, stepped on the stacked
    gradients, against separate modules with their own torch optimizers (the single runs)."""
    spec = ImitatorSpec(d_in=5, d_act=2, depth=3, width=16)
    cfgs = [
        BCConfig(optimizer=kind, eta=1e-2, weight_decay=0.0, grad_clip=0.0),
        BCConfig(optimizer=kind, eta=3e-3, beta1=0.8, beta2=0.99, momentum=0.5, weight_decay=0.1),
        BCConfig(optimizer=kind, eta=2e-2, beta1=0.5, momentum=0.0, weight_decay=1e-3, grad_clip=0.3),
    ]
    singles = []
    for k in range(len(cfgs)):
        torch.manual_seed(k)
        singles.append(make_imitator(spec))
    members = [copy.deepcopy(m) for m in singles]
    stacked = stack_parameters(members)
    ours = MemberOptimizers(
        [make_optimizer(c, m) for c, m in zip(cfgs, members)],
        members,
        stacked,
        grad_clips=[c.grad_clip for c in cfgs],
        fused=fused,
    )
    theirs = [make_optimizer(c, m) for c, m in zip(cfgs, singles)]
    gen = torch.Generator().manual_seed(0)
    for step in range(30):
        lrs = [c.eta * (1 + step) ** -0.5 for c in cfgs]  # a schedule: the rate changes every step
        for t in stacked.values():
            # gradients over six orders of magnitude, where Adam's normalization is most sensitive
            t.grad = torch.randn(t.shape, generator=gen) * 10.0 ** torch.randint(
                -6, 1, (len(cfgs), *[1] * (t.dim() - 1)), generator=gen
            )
        for k, module in enumerate(singles):  # before our step, which clips the stacked rows in place
            for name, p in module.named_parameters():
                p.grad = stacked[name].grad[k].clone()
        ours.step(lrs)
        for cfg, module, opt, lr in zip(cfgs, singles, theirs, lrs):
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
        for k, module in enumerate(singles):
            for name, p in module.named_parameters():
                row = stacked[name].detach()[k]
                assert torch.equal(row, dict(members[k].named_parameters())[name])  # the module is a view of its row
                if fused:
                    torch.testing.assert_close(row, p.detach(), rtol=1e-5, atol=1e-7)
                else:
                    assert torch.equal(row, p.detach()), (kind, step, k, name)
    for k, opt in enumerate(theirs):  # the checkpointed state has the single run's format and values
        mine, ref = ours.state_dict(k), opt.state_dict()
        assert mine["param_groups"] == ref["param_groups"]
        assert mine["state"].keys() == ref["state"].keys()
        for i, entry in ref["state"].items():
            assert mine["state"][i].keys() == entry.keys()
            for key, value in entry.items():
                torch.testing.assert_close(mine["state"][i][key], value, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- end to end


def test_members_equal_their_single_runs(runs):
    cfgs, singles, members, summaries = runs
    for k, (cfg, single, member) in enumerate(zip(cfgs, singles, members)):
        a, b = records(single), records(member)
        assert [(r["kind"], r.get("step"), r.get("weights")) for r in a] == [
            (r["kind"], r.get("step"), r.get("weights")) for r in b
        ]
        assert a[0] == b[0]  # meta: the expert's return from the same initial conditions
        for x, y in zip(a, b):
            if x["kind"] == "train":
                assert x["lr"] == y["lr"]
                np.testing.assert_allclose(y["loss"], x["loss"], rtol=LOSS_RTOL, err_msg=f"member {k}")
            elif x["kind"] == "loss":
                for key in ("train", "val", "train_avg", "val_avg"):
                    np.testing.assert_allclose(y[key], x[key], rtol=LOSS_RTOL, err_msg=f"member {k} {key}")
            elif x["kind"] in ("eval", "widths"):  # widths: every tracked width of a post-hoc EMA (member 5)
                assert x["lengths"] == y["lengths"]
                np.testing.assert_allclose(y["returns"], x["returns"], rtol=RETURN_RTOL, err_msg=f"member {k}")
            if x["kind"] == "widths":
                np.testing.assert_allclose(y["movement"], x["movement"], rtol=1e-4, err_msg=f"member {k}")
        assert any(r["kind"] == "widths" for r in a) == (cfg.posthoc_zoom == "rollout")
        assert json.loads((member / "config.json").read_text()) == json.loads((single / "config.json").read_text())
        assert summaries[k]["steps_done"] == cfg.steps
        assert RunDir(member).read_summary()["raw"].keys() == RunDir(single).read_summary()["raw"].keys()
        # the checkpoints: the same files, the same state as the single run's
        assert [c.step for c in RunDir(member).checkpoints()] == [c.step for c in RunDir(single).checkpoints()]
        mine = load_torch_file(RunDir(member).checkpoints()[-1].path)
        ref = load_torch_file(RunDir(single).checkpoints()[-1].path)
        assert mine.keys() == ref.keys()
        assert torch.equal(mine["generator"], ref["generator"]) and torch.equal(mine["torch_rng"], ref["torch_rng"])
        assert mine["optimizer"]["param_groups"] == ref["optimizer"]["param_groups"]
        assert mine["stabilizer"].keys() == ref["stabilizer"].keys()
        for name, value in ref["model"].items():
            assert mine["model"][name].untyped_storage().nbytes() == value.untyped_storage().nbytes()  # one row saved
            torch.testing.assert_close(mine["model"][name], value, rtol=1e-4, atol=1e-6)


def test_ensemble_resumes_to_the_same_logs(runs, tmp_path):
    """Stop mid-way (a kill), and also lose one member's newest checkpoint (a kill between the
    members' checkpoint writes): resuming gives byte-identical logs to the uninterrupted ensemble."""
    cfgs, _, members, _ = runs
    outs = [tmp_path / f"m{k}" for k in range(len(cfgs))]
    train_ensemble(cfgs, outs, quiet=True, stop_at=25)
    assert [c.step for c in RunDir(outs[0]).checkpoints()] == [10, 20]
    train_ensemble(cfgs, outs, quiet=True)
    for out, member in zip(outs, members):
        assert (out / "metrics.jsonl").read_text() == (member / "metrics.jsonl").read_text()

    for out in outs:
        shutil.rmtree(out)
    train_ensemble(cfgs, outs, quiet=True, stop_at=20)
    RunDir(outs[1]).checkpoints()[-1].path.unlink()  # member 1 was killed before writing step 20
    train_ensemble(cfgs, outs, quiet=True)
    for out, member in zip(outs, members):
        assert (out / "metrics.jsonl").read_text() == (member / "metrics.jsonl").read_text()


def test_a_member_resumes_alone_and_foreign_directories_are_refused(runs, tmp_path):
    cfgs, singles, _, _ = runs
    outs = [tmp_path / f"m{k}" for k in range(2)]
    train_ensemble(cfgs[:2], outs, quiet=True, stop_at=15)
    train_bc(cfgs[1], outs[1], quiet=True)  # a member's run directory is a single run's
    a, b = records(singles[1]), records(outs[1])
    assert [(r["kind"], r.get("step")) for r in a] == [(r["kind"], r.get("step")) for r in b]
    for x, y in zip(a, b):
        if x["kind"] == "train":
            np.testing.assert_allclose(y["loss"], x["loss"], rtol=LOSS_RTOL)
    # member 1 is now two checkpoints ahead of member 0: not an ensemble's directories any more
    with pytest.raises(ValueError, match="cannot resume the ensemble: .*m1 has a checkpoint at step 30"):
        train_ensemble(cfgs[:2], outs, quiet=True)
    # another configuration in a directory with checkpoints is refused before anything changes
    before = (outs[0] / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="cannot resume .*differs in eta"):
        train_ensemble([cfgs[0].replace(eta=5e-3), cfgs[1]], outs, quiet=True)
    assert (outs[0] / "metrics.jsonl").read_text() == before
