"""Environment ids, dimensions and seeded initial conditions (gvaempirics.bc.envs)."""

import numpy as np
import pytest

pytest.importorskip("mujoco")
gym = pytest.importorskip("gymnasium")

from gvaempirics.bc.envs import (
    ENV_IDS,
    SPECS,
    act_dim,
    action_bounds,
    check_env_id,
    initial_conditions,
    initial_conditions_from_seeds,
    mj_model,
    obs_dim,
)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_dims_and_constants_match_gymnasium(env_id):
    env = gym.make(env_id)
    u = env.unwrapped
    assert obs_dim(env_id) == env.observation_space.shape[0]
    assert act_dim(env_id) == env.action_space.shape[0]
    low, high = action_bounds(env_id)
    np.testing.assert_array_equal(low.astype(np.float32), env.action_space.low)
    np.testing.assert_array_equal(high.astype(np.float32), env.action_space.high)
    spec = SPECS[env_id]
    assert spec.frame_skip == u.frame_skip
    assert spec.forward_weight == u._forward_reward_weight
    assert spec.ctrl_weight == u._ctrl_cost_weight
    env.close()


def test_unknown_env_id_lists_valid_ids():
    with pytest.raises(ValueError) as err:
        check_env_id("Swimmer-v5")
    for env_id in ENV_IDS:
        assert env_id in str(err.value)
    with pytest.raises(ValueError, match="Walker2d-v5"):
        initial_conditions("Walker2d-v4x", 2, 0)


def test_n_must_be_positive():
    with pytest.raises(ValueError, match=r"n=0 .*\[1, inf\]"):
        initial_conditions("Hopper-v5", 0, 0)
    with pytest.raises(ValueError, match=r"reset_seeds=\[\] is out of range"):
        initial_conditions_from_seeds("Hopper-v5", [])


def test_initial_conditions_from_explicit_reset_seeds():
    ics = initial_conditions("Walker2d-v5", 3, seed=5)
    same = initial_conditions_from_seeds("Walker2d-v5", ics.reset_seeds[::-1])
    np.testing.assert_array_equal(same.qpos, ics.qpos[::-1])
    np.testing.assert_array_equal(same.qvel, ics.qvel[::-1])


def test_initial_conditions_are_seeded_gymnasium_resets():
    ics = initial_conditions("Hopper-v5", 4, seed=7)
    again = initial_conditions("Hopper-v5", 4, seed=7)
    np.testing.assert_array_equal(ics.qpos, again.qpos)
    np.testing.assert_array_equal(ics.reset_seeds, again.reset_seeds)
    assert ics.qpos.shape == (4, mj_model("Hopper-v5").nq) and ics.qvel.shape == (4, mj_model("Hopper-v5").nv)
    # each state is what a fresh gymnasium env resets to with the recorded seed
    env = gym.make("Hopper-v5")
    for i, s in enumerate(ics.reset_seeds):
        env.reset(seed=int(s))
        np.testing.assert_array_equal(env.unwrapped.data.qpos, ics.qpos[i])
        np.testing.assert_array_equal(env.unwrapped.data.qvel, ics.qvel[i])
    # distinct conditions, a prefix of a larger set, and a different seed gives other states
    assert len({tuple(q) for q in ics.qpos}) == 4
    np.testing.assert_array_equal(initial_conditions("Hopper-v5", 2, seed=7).qpos, ics.qpos[:2])
    assert not np.array_equal(initial_conditions("Hopper-v5", 4, seed=8).qpos, ics.qpos)


def test_one_seeding_scheme_with_disjoint_streams():
    from gvaempirics.bc.envs import STREAM_EVAL, STREAM_TRAIN, STREAM_VAL, reset_seeds

    # hand expansion of the scheme: SeedSequence([seed, stream]).generate_state(n)
    want = np.random.SeedSequence([7, STREAM_TRAIN]).generate_state(5, np.uint32).astype(np.int64)
    np.testing.assert_array_equal(reset_seeds(7, 5, STREAM_TRAIN), want)
    np.testing.assert_array_equal(reset_seeds(7, 3, STREAM_TRAIN), want[:3])  # prefix property
    streams = [set(reset_seeds(7, 50, s).tolist()) for s in (STREAM_EVAL, STREAM_TRAIN, STREAM_VAL)]
    assert not (streams[0] & streams[1]) and not (streams[1] & streams[2]) and not (streams[0] & streams[2])
    ics = initial_conditions("Hopper-v5", 3, seed=7)
    np.testing.assert_array_equal(ics.reset_seeds, reset_seeds(7, 3, STREAM_EVAL))
