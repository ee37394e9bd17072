"""The batched evaluator against the plain gymnasium loop (gvaempirics.bc.evaluator)."""

import numpy as np
import pytest
import torch

pytest.importorskip("mujoco")
gym = pytest.importorskip("gymnasium")

from gvaempirics.bc.envs import ENV_IDS, act_dim, initial_conditions, obs_dim
from gvaempirics.bc.evaluator import rollout, rollout_reference, stacked_policy


def random_policy(env_id, seed=1, scale=1.5):
    """Seeded uniform actions, deliberately beyond the action box so clipping is exercised."""
    rng = np.random.default_rng(seed)
    return lambda obs: torch.as_tensor(rng.uniform(-scale, scale, tuple(obs.shape[:2]) + (act_dim(env_id),)))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_equals_gymnasium_step_by_step(env_id):
    ics = initial_conditions(env_id, 3, seed=0)
    fast = rollout(env_id, ics, 40, random_policy(env_id), n_policies=2, record=True, threads=2)
    ref = rollout_reference(env_id, ics, 40, random_policy(env_id), n_policies=2, record=True)
    np.testing.assert_array_equal(fast.alive, ref.alive)
    np.testing.assert_array_equal(fast.lengths, ref.lengths)
    np.testing.assert_allclose(fast.rewards, ref.rewards, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fast.obs, ref.obs, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fast.returns, ref.returns, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast.distances, ref.distances, rtol=0, atol=1e-12)  # gymnasium's info["x_position"]
    assert np.abs(ref.distances).max() > 1e-3  # the walkers did move
    np.testing.assert_array_equal(fast.actions, ref.actions)
    assert fast.obs.shape == (2, 3, 40, obs_dim(env_id))


def test_reference_is_gymnasium_with_clipped_actions():
    """Hand-driven gymnasium env, independent of both rollout paths, for the first IC."""
    env_id = "Walker2d-v5"
    ics = initial_conditions(env_id, 1, seed=3)
    res = rollout_reference(env_id, ics, 30, random_policy(env_id, seed=5), record=True)
    rng = np.random.default_rng(5)
    env = gym.make(env_id)
    obs, _ = env.reset(seed=int(ics.reset_seeds[0]))
    for t in range(30):
        a = np.clip(rng.uniform(-1.5, 1.5, (1, 1, 6))[0, 0], -1, 1)
        np.testing.assert_array_equal(res.obs[0, 0, t], obs)
        obs, r, term, _, _ = env.step(a)
        assert res.rewards[0, 0, t] == r
        if term:
            assert res.lengths[0, 0] == t + 1 and not res.alive[0, 0, t + 1 :].any()
            break


def test_termination_freezes_episode():
    env_id = "Hopper-v5"
    ics = initial_conditions(env_id, 4, seed=0)
    res = rollout(env_id, ics, 60, random_policy(env_id, scale=5.0), record=True)
    assert (res.lengths < 60).all()  # random actions topple the hopper
    for i in range(4):
        L = res.lengths[0, i]
        assert res.alive[0, i, :L].all() and not res.alive[0, i, L:].any()
        assert (res.rewards[0, i, L:] == 0).all()
        assert (res.obs[0, i, L:] == res.obs[0, i, L]).all()
    np.testing.assert_allclose(res.returns, res.rewards.sum(-1), rtol=0, atol=1e-12)


def test_thread_count_does_not_change_results():
    env_id = "Ant-v5"
    ics = initial_conditions(env_id, 5, seed=2)
    runs = [rollout(env_id, ics, 20, random_policy(env_id), record=True, threads=k) for k in (1, 2, 3)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.rewards, runs[0].rewards)
        np.testing.assert_array_equal(r.obs, runs[0].obs)


def test_policy_sees_all_pairs_once_per_step():
    env_id = "HalfCheetah-v5"
    ics = initial_conditions(env_id, 3, seed=0)
    seen = []

    def policy(obs):
        seen.append(obs.clone())
        return torch.zeros(obs.shape[:2] + (act_dim(env_id),))

    res = rollout(env_id, ics, 5, policy, n_policies=2, record=True)
    assert len(seen) == 5 and all(o.shape == (2, 3, obs_dim(env_id)) and o.dtype == torch.float32 for o in seen)
    np.testing.assert_array_equal(seen[2].numpy(), res.obs[:, :, 2].astype(np.float32))
    np.testing.assert_array_equal(res.returns[0], res.returns[1])  # same policy, same ICs


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(horizon=0), r"horizon=0 .*\[1, inf\]"),
        (dict(n_policies=0), r"n_policies=0 .*\[1, inf\]"),
        (dict(threads=0), r"threads=0 .*\[1, inf\]"),
        (dict(env_id="Swimmer-v5"), "Walker2d-v5, Hopper-v5"),
        (dict(env_id="Hopper-v5"), "does not match"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(
        env_id="Walker2d-v5",
        ics=initial_conditions("Walker2d-v5", 1, 0),
        horizon=5,
        policy=random_policy("Walker2d-v5"),
        n_policies=1,
        threads=2,
    )
    args.update(kwargs)
    for fn in (rollout, rollout_reference):
        with pytest.raises(ValueError, match=match):
            fn(**args)


def test_wrong_action_shape_is_rejected():
    ics = initial_conditions("Walker2d-v5", 2, 0)
    with pytest.raises(ValueError, match="shape"):
        rollout("Walker2d-v5", ics, 3, lambda o: torch.zeros(o.shape[:2] + (3,)))


def _checkpoints(module, n, seed):
    torch.manual_seed(seed)
    out = []
    for _ in range(n):
        for p in module.parameters():
            torch.nn.init.normal_(p, std=0.3)
        out.append({k: v.clone() for k, v in module.state_dict().items()})
    return out


def test_stacked_policy_equals_each_checkpoint_alone():
    from gvaempirics.bc.imitators import ImitatorSpec, make_imitator

    net = make_imitator(ImitatorSpec(d_in=23, d_act=6, depth=2, width=32))
    params = _checkpoints(net, 4, seed=0)
    x = torch.randn(4, 5, 23)
    got = stacked_policy(net, params)(x)
    for p, sd in enumerate(params):
        net.load_state_dict(sd)
        torch.testing.assert_close(got[p], net(x[p]), rtol=1e-5, atol=1e-6)


def test_stacked_policy_falls_back_to_a_loop():
    class Branchy(torch.nn.Module):  # data-dependent control flow: vmap cannot batch it
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x) if x.sum() > 0 else -self.lin(x)

    net = Branchy()
    params = _checkpoints(net, 3, seed=1)
    x = torch.randn(3, 4, 3)
    got = stacked_policy(net, params)(x)
    for p, sd in enumerate(params):
        net.load_state_dict(sd)
        torch.testing.assert_close(got[p], net(x[p]))


def test_progress_bar_when_not_quiet(capsys):
    ics = initial_conditions("HalfCheetah-v5", 1, 0)
    rollout("HalfCheetah-v5", ics, 3, random_policy("HalfCheetah-v5"), quiet=False)
    assert "rollout HalfCheetah-v5" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_equals_gymnasium_long_horizon(env_id):
    """Small actions keep episodes alive longer: 1000 steps, 4 initial conditions."""
    ics = initial_conditions(env_id, 4, seed=11)
    fast = rollout(env_id, ics, 1000, random_policy(env_id, seed=2, scale=0.3), record=True)
    ref = rollout_reference(env_id, ics, 1000, random_policy(env_id, seed=2, scale=0.3), record=True)
    np.testing.assert_array_equal(fast.alive, ref.alive)
    np.testing.assert_allclose(fast.rewards, ref.rewards, rtol=0, atol=1e-10)
