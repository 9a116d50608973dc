"""The rollout loop: the same buffer, callbacks and episode records as SB3's own loop, for the same seed."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from helpers import ACTION_SPACES, ToyEnv
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from sb3_trpo_ext import TRPO

BUFFER_FIELDS = ("actions", "rewards", "episode_starts", "values", "log_probs", "advantages", "returns")


def toy(space, observation="vector"):
    return lambda: DummyVecEnv([lambda: ToyEnv(ACTION_SPACES[space], observation)] * 2)


CASES = {
    # CartPole ends episodes both ways: by failure and (at 30 steps) by the time limit, which bootstraps.
    "discrete": (
        lambda: make_vec_env(gym.make, n_envs=2, env_kwargs=dict(id="CartPole-v1", max_episode_steps=30)),
        "MlpPolicy",
        {},
    ),
    "box3": (toy("box3"), "MlpPolicy", {}),
    "box3, ReLU, separate features extractors": (
        toy("box3"),
        "MlpPolicy",
        dict(policy_kwargs=dict(activation_fn=nn.ReLU, share_features_extractor=False)),
    ),
    "multidiscrete": (toy("multidiscrete"), "MlpPolicy", {}),
    "multibinary": (toy("multibinary"), "MlpPolicy", {}),
    "dict observations": (toy("box3", "dict"), "MultiInputPolicy", {}),
    "discrete observations": (toy("discrete", "index"), "MlpPolicy", {}),
    "gSDE, squashed": (
        lambda: make_vec_env("Pendulum-v1", n_envs=2),
        "MlpPolicy",
        dict(use_sde=True, sde_sample_freq=4, policy_kwargs=dict(squash_output=True)),
    ),
}


def untimed(infos):
    """The infos without Monitor's wall-clock episode time, the one entry two runs cannot share."""
    return [
        {key: ({k: v for k, v in value.items() if k != "t"} if key == "episode" else value) for key, value in info.items()}
        for info in infos
    ]


class Recorder(BaseCallback):
    """Records what a callback sees at every step, and stops the rollout after ``stop_after`` calls."""

    def __init__(self, stop_after=None, widen_every=None):
        super().__init__()
        self.stop_after = stop_after
        self.widen_every = widen_every
        self.seen = []

    def _on_step(self) -> bool:
        if self.widen_every is not None and self.n_calls % self.widen_every == 0:
            with th.no_grad():  # in place, as a schedule or a parameter loader would
                self.model.policy.log_std.add_(0.25)
                self.model.policy.action_net.bias.add_(0.1)
                self.model.policy.value_net.weight.mul_(1.1)
        keys = ("new_obs", "rewards", "dones", "clipped_actions", "actions", "n_steps")
        self.seen.append([copy.deepcopy(self.locals[key]) for key in keys] + [untimed(self.locals["infos"])])
        return self.stop_after is None or self.n_calls < self.stop_after

    def _on_rollout_end(self) -> None:
        self.seen.append(sorted(self.locals))  # the loop's variables a callback can read, under SB3's names


def rollouts(loop, make_env, policy, kwargs, n_rollouts=2, stop_after=None, widen_every=None):
    model = TRPO(policy, make_env(), n_steps=40, batch_size=40, seed=3, **kwargs)
    recorder = Recorder(stop_after, widen_every)
    _, callback = model._setup_learn(10**6, recorder)
    callback.on_training_start(locals(), globals())
    results = [loop(model, model.env, callback, model.rollout_buffer, model.n_steps) for _ in range(n_rollouts)]
    return model, recorder.seen, results


#: How far the fast paths' numbers may be from SB3's loop, relatively and absolutely: float32 rounding (numpy's matrix
#: products sum in another order than torch's), never a different draw.
TOLERANCE = 1e-6


def assert_same(a, b, atol=0.0):
    """Equal, or, with ``atol``, arrays and floats within ``atol`` absolutely and relatively (else exactly equal)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key], atol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y, atol)
    elif isinstance(a, np.ndarray):
        np.testing.assert_allclose(a, b, rtol=atol, atol=atol) if atol else np.testing.assert_array_equal(a, b)
    elif isinstance(a, float) and atol:
        assert abs(a - b) <= atol * (1 + abs(b))
    else:
        assert a == b


@pytest.mark.parametrize("fast_paths", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_rollout_fills_the_buffer_as_sb3_s_loop(case, fast_paths):
    """The same draws give the same actions, values, log-probabilities, buffer and callback locals: bit for bit off
    the fast paths, to float32 rounding on them."""
    sb3, sb3_seen, sb3_results = rollouts(OnPolicyAlgorithm.collect_rollouts, *CASES[case])
    make_env, policy, kwargs = CASES[case]
    ours, our_seen, our_results = rollouts(TRPO.collect_rollouts, make_env, policy, {**kwargs, "fast_paths": fast_paths})
    # On the fast paths MLP policies act through their MLP networks, gSDE through the policy's own forward; off them,
    # every policy acts through its own forward.
    assert (ours._speedups.actor is None) == ("gSDE" in case or not fast_paths)
    assert (getattr(ours._rollout_acting, "actor", None) is ours.policy) == (not fast_paths)
    assert our_results == sb3_results == [True, True]
    atol = TOLERANCE if fast_paths else 0.0
    for field in BUFFER_FIELDS:
        assert_same(getattr(ours.rollout_buffer, field), getattr(sb3.rollout_buffer, field), atol)
    assert_same(ours.rollout_buffer.observations, sb3.rollout_buffer.observations, atol)
    assert_same(our_seen, sb3_seen, atol)
    assert_same(ours._last_obs, sb3._last_obs, atol)
    np.testing.assert_array_equal(ours._last_episode_starts, sb3._last_episode_starts)
    assert ours.num_timesteps == sb3.num_timesteps == 2 * 40 * 2
    assert [info["r"] for info in ours.ep_info_buffer] == [info["r"] for info in sb3.ep_info_buffer]


def test_rollout_stops_where_a_callback_says_so():
    sb3, sb3_seen, sb3_results = rollouts(OnPolicyAlgorithm.collect_rollouts, *CASES["discrete"], stop_after=7)
    ours, our_seen, our_results = rollouts(TRPO.collect_rollouts, *CASES["discrete"], stop_after=7)
    assert our_results == sb3_results == [False, False]
    assert ours.rollout_buffer.pos == sb3.rollout_buffer.pos
    assert ours.num_timesteps == sb3.num_timesteps
    assert_same(our_seen, sb3_seen)


def test_rollout_follows_parameters_changed_during_it():
    # The Gaussian's std and the numpy actor's weights are computed once for the steps they stay the same, not beyond.
    sb3, sb3_seen, _ = rollouts(OnPolicyAlgorithm.collect_rollouts, *CASES["box3"], widen_every=5)
    ours, our_seen, _ = rollouts(TRPO.collect_rollouts, *CASES["box3"], widen_every=5)
    assert ours._speedups.actor is not None
    assert type(ours._rollout_acting).__name__ == "NumpyRolloutActor"
    for field in ("actions", "log_probs", "values"):
        assert_same(getattr(ours.rollout_buffer, field), getattr(sb3.rollout_buffer, field), TOLERANCE)
    assert_same(our_seen, sb3_seen, TOLERANCE)


class ClampedPolicy(ActorCriticPolicy):
    """A policy whose forward clamps its actions: what it does beyond SB3's forward, a fast path must not skip."""

    def forward(self, obs, deterministic=False):
        actions, values, log_prob = super().forward(obs, deterministic)
        return actions.clamp(-0.5, 0.5), values, log_prob


def test_a_policy_that_overrides_forward_acts_through_it():
    ours, _, _ = rollouts(TRPO.collect_rollouts, toy("box3"), ClampedPolicy, dict(policy_kwargs=dict(log_std_init=1.0)))
    assert type(ours._rollout_acting).__name__ == "PolicyActing" and ours._speedups.actor is None
    assert np.abs(ours.rollout_buffer.actions).max() <= 0.5


@pytest.mark.parametrize("space", ["discrete", "box3"])
@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU])
@pytest.mark.parametrize("n_envs", [1, 3, 8])  # a discrete policy's 3 and 24 logits: over Python floats, in numpy
def test_the_numpy_actor_acts_as_the_policy_given_the_same_draws(space, activation, n_envs):
    from sb3_trpo_ext.rollout import NumpyRolloutActor

    env = DummyVecEnv([lambda: ToyEnv(ACTION_SPACES[space])] * n_envs)
    model = TRPO("MlpPolicy", env, n_steps=8, batch_size=8, seed=0, policy_kwargs=dict(activation_fn=activation))
    actor = model._speedups.rollout_acting(model.policy, model._kind)
    assert isinstance(actor, NumpyRolloutActor)
    observations = np.random.default_rng(0).normal(size=(n_envs, 4)) * 3
    for _ in range(3):
        th.manual_seed(7)
        obs_tensor, actions, values, log_prob = actor.act(observations, np.zeros(n_envs, bool), {})
        assert obs_tensor.dtype == th.float64 and np.shares_memory(obs_tensor.numpy(), observations)
        actions = th.from_numpy(actions)
        th.manual_seed(7)
        with th.inference_mode():
            expected = model.policy(th.as_tensor(observations))
        for got, want in zip((actions, values, log_prob), expected, strict=True):
            assert got.shape == want.shape and got.dtype == want.dtype
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=TOLERANCE, atol=TOLERANCE)
        with th.no_grad():  # a change between steps, as an update makes it, is seen at the next
            model.policy.mlp_extractor.policy_net[0].weight.mul_(1.1)


@pytest.mark.parametrize("n_envs", [1, 3])
def test_generalized_advantages_are_sb3_s(n_envs):
    from stable_baselines3.common.buffers import RolloutBuffer

    from sb3_trpo_ext.rollout import generalized_advantages

    rng = np.random.default_rng(n_envs)
    buffer = RolloutBuffer(64, gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2), n_envs=n_envs, gamma=0.97, gae_lambda=0.9)
    buffer.rewards[:] = rng.normal(size=(64, n_envs)) * 5
    buffer.values[:] = rng.normal(size=(64, n_envs)) * 5
    buffer.episode_starts[:] = rng.random((64, n_envs)) < 0.1
    last_values, dones = th.as_tensor(rng.normal(size=(n_envs, 1)), dtype=th.float32), rng.random(n_envs) < 0.5
    ours = generalized_advantages(buffer.rewards, buffer.values, buffer.episode_starts, last_values.numpy().reshape(-1), dones,
                                  buffer.gamma, buffer.gae_lambda)  # fmt: skip
    buffer.compute_returns_and_advantage(last_values, dones)
    assert ours.dtype == np.float32 and ours.shape == (64, n_envs)
    np.testing.assert_allclose(ours, buffer.advantages, rtol=TOLERANCE, atol=TOLERANCE)
    assert not np.allclose(ours[:-1], ours[1:])  # the test data has structure to get wrong
