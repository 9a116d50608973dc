"""
One step of a rollout, as SB3's loop makes it, with less work: acting (sampled actions, values, log-probabilities)
and recording the step in the rollout buffer.
"""

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn
from torch.nn import functional as F

from sb3_trpo_ext.dense import DenseNetwork, action_distribution, actor_features, critic_features

Act = Callable[[PyTorchObs], tuple[th.Tensor, th.Tensor, th.Tensor]]


def rollout_policy(policy: ActorCriticPolicy, actor: DenseNetwork | None, critic: DenseNetwork | None) -> Act:
    """``policy(observations)`` for the steps of one rollout: through the dense networks where the policy has them."""
    if actor is not None and critic is not None:
        return RolloutPolicy(policy, actor, critic)

    def act(observations: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        with argument_checks_off():
            return policy(observations)

    return act


@contextmanager
def argument_checks_off() -> Iterator[None]:
    """torch.distributions without its per-call argument validation (a few tensor reductions per distribution)."""
    previous = th.distributions.Distribution._validate_args
    th.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        th.distributions.Distribution.set_default_validate_args(previous)


class RolloutPolicy:
    """
    ``policy(observations)`` as the rollout calls it: sampled actions, their values and log-probabilities, with
    the actor and critic networks of :func:`actor_network` and :func:`critic_network`, and every number the one SB3's
    forward computes (the same kernels in the same order, the same random draws).

    A diagonal Gaussian or a categorical is sampled without building torch.distributions objects, whose construction
    costs more than the arithmetic on a few states, by the operations those objects run, in their order. Other
    distributions go through SB3's.
    """

    def __init__(self, policy: ActorCriticPolicy, actor: DenseNetwork, critic: DenseNetwork) -> None:
        self.policy, self.actor, self.critic = policy, actor, critic
        self._gaussian_scale: tuple[nn.Parameter, int, th.Size, tuple[th.Tensor, ...]] | None = None

    def __call__(self, observations: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        policy = self.policy
        pi_features = actor_features(policy, observations)
        vf_features = pi_features if policy.share_features_extractor else critic_features(policy, observations)
        values = self.critic.forward(vf_features)[-1]
        actions, log_prob = self._sample_with_log_prob(self.actor.forward(pi_features)[-1])
        return actions.reshape((-1, *policy.action_space.shape)), values, log_prob  # type: ignore[misc]

    def _sample_with_log_prob(self, output: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        if type(self.policy.action_dist) is DiagGaussianDistribution:
            std, two_variance, log_std = self._gaussian_terms(output)
            actions = output + th.empty_like(output).normal_() * std
            log_density = -((actions - output) ** 2) / two_variance - log_std - math.log(math.sqrt(2 * math.pi))
            return actions, log_density.sum(dim=1)
        if type(self.policy.action_dist) is CategoricalDistribution:
            log_probs = output - output.logsumexp(dim=-1, keepdim=True)
            probs = F.softmax(log_probs, dim=-1)
            # torch.multinomial's draw of one sample: argmax(p / q), q ~ Exp(1) (the Gumbel-max trick), without the
            # checks of p it makes first (p is a softmax here).
            index = (probs / th.empty_like(probs).exponential_()).argmax(dim=-1, keepdim=True)
            return index.reshape(len(output)), log_probs.gather(-1, index).reshape(len(output))
        with argument_checks_off():
            distribution = action_distribution(self.policy, output)
            actions = distribution.get_actions(deterministic=False)
            return actions, distribution.log_prob(actions)

    def _gaussian_terms(self, output: th.Tensor) -> tuple[th.Tensor, ...]:
        """
        The Gaussian's std, 2 sigma^2 and log sigma as torch.distributions.Normal computes them from SB3's
        ``ones_like(mean) * log_std.exp()``, kept while the log-std is the same tensor at the same version
        (a callback may change it during the rollout).
        """
        log_std = self.policy.log_std
        cached = self._gaussian_scale
        if cached is None or cached[0] is not log_std or cached[1] != log_std._version or cached[2] != output.shape:
            std = th.ones_like(output) * log_std.exp()
            self._gaussian_scale = (log_std, log_std._version, output.shape, (std, 2 * std**2, std.log()))
        return self._gaussian_scale[3]  # type: ignore[index]


def add_to_buffer(
    buffer: RolloutBuffer,
    obs: np.ndarray | dict[str, np.ndarray],
    action: np.ndarray,
    reward: np.ndarray,
    episode_start: np.ndarray,
    value: th.Tensor,
    log_prob: th.Tensor,
) -> None:
    """
    ``buffer.add(...)``: for SB3's own RolloutBuffer, the same entries written without its defensive copies (the
    assignment into the buffer's arrays copies already; the tensors are not cloned before their conversion).
    Any other buffer class gets its own ``add``.
    """
    if type(buffer) is not RolloutBuffer or log_prob.dim() == 0:
        buffer.add(obs, action, reward, episode_start, value, log_prob)  # type: ignore[arg-type]
        return
    pos = buffer.pos
    if isinstance(buffer.observation_space, spaces.Discrete):
        obs = obs.reshape((buffer.n_envs, *buffer.obs_shape))  # type: ignore[union-attr]
    buffer.observations[pos] = obs
    buffer.actions[pos] = action.reshape((buffer.n_envs, buffer.action_dim))
    buffer.rewards[pos] = reward
    buffer.episode_starts[pos] = episode_start
    buffer.values[pos] = value.numpy(force=True).reshape(-1)
    buffer.log_probs[pos] = log_prob.numpy(force=True)
    buffer.pos += 1
    if buffer.pos == buffer.buffer_size:
        buffer.full = True
