"""
What the rollout does at each step on the fast paths, with less work than SB3's loop and the same numbers: acting
(sampled actions, values, log-probabilities), recording the step in the rollout buffer, and GAE at the end. The loop
itself is :class:`~sb3_trpo_ext.rollout_loop.RolloutLoop`.
"""

import math
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.utils import obs_as_tensor
from torch import nn
from torch.nn import functional as F

from sb3_trpo_ext.mlp import NUMPY_ACTIVATIONS, MlpNetwork, action_distribution, actor_features, critic_features
from sb3_trpo_ext.torch_private import distribution_checks_off, version_of, versions

#: observations (and what else the policy reads at a step, by keyword) -> (sampled actions, values,
#: log-probabilities): ``policy(observations, ...)`` as the rollout calls it.
RolloutActor = Callable[..., tuple[th.Tensor, th.Tensor, th.Tensor]]

#: What one step's acting gives the loop, under SB3's names: (obs_tensor, actions as a numpy array, values,
#: log_probs).
Acted = tuple[PyTorchObs, np.ndarray, th.Tensor, th.Tensor]


class KindActs(Protocol):
    """What the rollout's acting reads of a kind of policy (:class:`~sb3_trpo_ext.kinds.PolicyKind`)."""

    #: whether the policy acts on the observations alone, as ``policy(observations)`` (no masks, no states)
    acts_on_observations_alone: ClassVar[bool]

    def act(
        self, policy: Any, actor: RolloutActor, observations: PyTorchObs, episode_starts: Any, step_inputs: dict
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]: ...


class RolloutActing(Protocol):
    """One step's acting: SB3's observations (and episode starts, and what else the kind reads by keyword) -> what
    the loop calls obs_tensor, actions, values and log_probs."""

    def act(self, observations: Any, episode_starts: Any, step_inputs: dict) -> Acted: ...


class PolicyActing:
    """
    One step's acting as SB3's loop does it: in inference mode, the observations as tensors on the policy's device,
    the kind of policy's act through ``actor`` (the policy, or an MLP actor of it), the actions back as numpy.
    """

    def __init__(self, kind: KindActs, policy: Any, actor: RolloutActor) -> None:
        self.kind, self.policy, self.actor = kind, policy, actor

    def act(self, observations: Any, episode_starts: Any, step_inputs: dict) -> Acted:
        with th.inference_mode():
            obs_tensor = obs_as_tensor(observations, self.policy.device)
            actions, values, log_probs = self.kind.act(self.policy, self.actor, obs_tensor, episode_starts, step_inputs)
        return obs_tensor, actions.cpu().numpy(), values, log_probs


class MlpRolloutActor:
    """
    The rollout actor of an MLP policy: sampled actions, their values and log-probabilities, with the actor and
    critic networks of :func:`actor_network` and :func:`critic_network`, and every number the one SB3's forward
    computes (the same kernels in the same order but numpy's tanh, the same random draws).

    A diagonal Gaussian or a categorical is sampled without building torch.distributions objects, whose construction
    costs more than the arithmetic on a few states, by the operations those objects run, in their order. Other
    distributions go through SB3's.
    """

    def __init__(self, policy: ActorCriticPolicy, actor: MlpNetwork, critic: MlpNetwork) -> None:
        self.policy, self.actor, self.critic = policy, actor, critic
        self._gaussian_scale: tuple[nn.Parameter, int | None, th.Size, tuple[th.Tensor, ...]] | None = None

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
        with distribution_checks_off():
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
        version, cached = version_of(log_std), self._gaussian_scale
        if version is None or cached is None or cached[0] is not log_std or cached[1] != version or cached[2] != output.shape:
            std = th.ones_like(output) * log_std.exp()
            self._gaussian_scale = (log_std, version, output.shape, (std, 2 * std**2, std.log()))
        return self._gaussian_scale[3]  # type: ignore[index]


class NumpyRolloutActor:
    """
    The rollout actor of an MLP policy on vector observations, on the CPU, with a diagonal Gaussian or a categorical:
    :class:`MlpRolloutActor`'s arithmetic in numpy, with the same random draws from torch's generator. A small
    network's step costs a few microseconds there, against tens through torch's operators.

    The actor and the critic run as one network: layer l's weights are the two networks' side by side (the first
    layer) or on a block diagonal (the others), with the biases as a last row that a constant 1 in each input
    multiplies. That is 2 numpy calls a layer for both networks, on a copy of the weights made again whenever a
    parameter changes (its in-place version counter moves: an update, a load, a callback). Its numbers equal
    torch's to float32 rounding (products summed in another order, the log-density from the noise).
    """

    def __init__(self, policy: ActorCriticPolicy, actor: MlpNetwork, critic: MlpNetwork) -> None:
        self.policy, self.networks = policy, (actor, critic)
        self.gaussian = type(policy.action_dist) is DiagGaussianDistribution
        self.parameters = [*actor.parameters, *critic.parameters, *([policy.log_std] if self.gaussian else [])]
        self.action_shape = (-1, *policy.action_space.shape)  # type: ignore[misc]
        self.n_actions = actor.layers[-1].weight.shape[0]
        self.versions: list[int] = []
        self.inputs: list[np.ndarray] = [np.empty((0, 0), np.float32)]

    @staticmethod
    def takes(policy: ActorCriticPolicy, actor: MlpNetwork, critic: MlpNetwork) -> bool:
        """Whether this actor can act for ``policy``: vector observations its features extractors only flatten, on
        the CPU, networks of equal depth with biases and the same activations, and a diagonal Gaussian (with a
        state-independent log-std) or a categorical; parameters whose versions torch counts."""
        pairs = list(zip(actor.layers, critic.layers, strict=False))
        return (
            policy.device.type == "cpu"
            and type(policy.action_dist) in (DiagGaussianDistribution, CategoricalDistribution)
            and isinstance(policy.observation_space, spaces.Box)
            and len(policy.observation_space.shape) == 1
            and type(policy.pi_features_extractor) is FlattenExtractor
            and type(policy.vf_features_extractor) is FlattenExtractor
            and len(actor.layers) == len(critic.layers)
            and all(a.activation is c.activation and a.activation in NUMPY_ACTIVATIONS for a, c in pairs)
            and all(layer.bias is not None for layer in (*actor.layers, *critic.layers))
            and (type(policy.action_dist) is CategoricalDistribution or isinstance(policy.log_std, nn.Parameter))
            and all(version_of(param) is not None for param in (*actor.parameters, *critic.parameters))
        )

    def _refresh(self, n: int) -> None:
        """The joint network's weights from the parameters as they are now, and its buffers for ``n`` inputs."""
        actor, critic = self.networks
        weights = []
        for index, (a, c) in enumerate(zip(actor.layers, critic.layers, strict=True)):
            a_weight, c_weight = a.weight.detach().numpy(), c.weight.detach().numpy()
            if index == 0:
                joint = np.concatenate([a_weight, c_weight]).T
            else:
                joint = np.zeros((a_weight.shape[1] + c_weight.shape[1], a_weight.shape[0] + c_weight.shape[0]), np.float32)
                joint[: a_weight.shape[1], : a_weight.shape[0]] = a_weight.T
                joint[a_weight.shape[1] :, a_weight.shape[0] :] = c_weight.T
            bias = np.concatenate([a.bias.detach().numpy(), c.bias.detach().numpy()])  # type: ignore[union-attr]
            weights.append((np.vstack([joint, bias]).astype(np.float32), NUMPY_ACTIVATIONS[a.activation]))
        # Each layer reads its input (whose last column stays 1) and writes the next layer's input, or the output.
        self.inputs = [np.ones((n, len(weight)), np.float32) for weight, _ in weights]
        output = np.empty((n, weights[-1][0].shape[1]), np.float32)
        outputs = [x[:, :-1] for x in self.inputs[1:]] + [output]
        self.layers = [
            (x, weight, out, activation) for x, (weight, activation), out in zip(self.inputs, weights, outputs, strict=True)
        ]
        self.mean, self.values = output[:, : self.n_actions], output[:, self.n_actions :]
        if self.gaussian:
            log_std = self.policy.log_std.detach().numpy()
            self.std = np.exp(log_std)
            self.log_normalizer = float(log_std.sum()) + len(log_std) * math.log(math.sqrt(2 * math.pi))
        # torch's generator draws the noise into memory numpy reads.
        self.noise = th.empty((n, self.n_actions))
        self.noise_array = self.noise.numpy()
        self.squares = np.empty((n, self.n_actions), np.float32)
        self.row_starts = np.arange(n) * self.n_actions
        self.versions = versions(self.parameters)

    def act(self, observations: Any, episode_starts: Any, step_inputs: dict) -> Acted:
        """One step's acting (:class:`PolicyActing`'s, for SB3's actor-critic policies): the observations' tensor
        shares their memory, as ``obs_as_tensor``'s does."""
        n = len(observations)
        if len(self.inputs[0]) != n or versions(self.parameters) != self.versions:
            self._refresh(n)
        self.network(observations)
        actions, log_prob = self.draw()
        values = th.from_numpy(self.values.copy())
        return th.from_numpy(observations), actions.reshape(self.action_shape), values, th.from_numpy(log_prob)

    def network(self, observations: np.ndarray) -> None:
        """The joint network on ``observations``, into ``mean`` (or the logits) and ``values``."""
        self.inputs[0][:, :-1] = observations.reshape(len(observations), -1)  # as float32, as the policy's preprocessing
        for x, weight, out, activation in self.layers:
            np.matmul(x, weight, out=out)
            if activation is not None:
                activation(out, out=out)

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        """Actions drawn from the distribution the network gave, and their log-probabilities."""
        return self._gaussian(self.mean) if self.gaussian else self._categorical(self.mean)

    def _gaussian(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.noise.normal_()
        noise = self.noise_array
        actions = noise * self.std
        actions += mean
        # log N(a; mean, std) = -((a - mean) / std)^2 / 2 - log std - log sqrt(2 pi), with (a - mean) / std the noise
        log_density = np.add.reduce(np.square(noise, out=self.squares), axis=1)
        log_density *= -0.5
        log_density -= self.log_normalizer
        return actions, log_density

    def _categorical(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # torch.multinomial's draw as MlpRolloutActor makes it, argmax(p / q) with q ~ Exp(1), in logarithms.
        self.noise.exponential_()
        index = (logits - np.log(self.noise_array)).argmax(axis=1)
        if logits.size <= _FEW:
            return index, _log_softmax_at(logits.tolist(), index.tolist())
        shifted = logits - np.maximum.reduce(logits, axis=1, keepdims=True)
        log_normalizer = np.log(np.add.reduce(np.exp(shifted), axis=1))
        return index, shifted.ravel()[self.row_starts + index] - log_normalizer


#: Up to this many logits a step, the log-softmax runs over Python floats: its half-dozen numpy calls on a few numbers
#: cost more than the numbers.
_FEW = 16


def _log_softmax_at(logits: list[list[float]], indices: list[int]) -> np.ndarray:
    """Each row's log-probability at its index (the logit less the row's log-sum-exp), in float64: the float32
    log-softmax to rounding."""
    log_probs = []
    for row, index in zip(logits, indices, strict=True):
        top = max(row)
        log_probs.append(row[index] - top - math.log(math.fsum([math.exp(logit - top) for logit in row])))
    return np.array(log_probs, dtype=np.float32)


def generalized_advantages(
    rewards: np.ndarray,
    values: np.ndarray,
    episode_starts: np.ndarray,
    last_values: np.ndarray,
    last_dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> np.ndarray:
    """
    GAE(gamma, lambda) (Schulman et al., 2016) of a rollout of shape (n_steps, n_envs), as SB3's
    ``RolloutBuffer.compute_returns_and_advantage`` defines it: A_t = delta_t + gamma lambda m_{t+1} A_{t+1}, with
    delta_t = r_t + gamma m_{t+1} V_{t+1} - V_t and m_{t+1} = 0 where an episode starts at t + 1 (after the last step:
    where it is done). The deltas are computed for all steps at once; the recurrence runs over Python floats, which
    costs a twentieth of numpy's per-step calls (in float64, so it equals SB3's float32 to rounding).
    """
    not_done = np.empty_like(rewards)
    not_done[:-1] = 1.0 - episode_starts[1:]
    not_done[-1] = 1.0 - last_dones.astype(np.float32)
    next_values = np.empty_like(values)
    next_values[:-1], next_values[-1] = values[1:], last_values
    deltas = (rewards + gamma * next_values * not_done - values).T.tolist()
    decays = (gamma * gae_lambda * not_done).T.tolist()
    advantages = []
    for delta, decay in zip(deltas, decays, strict=True):  # one environment at a time, from the last step back
        advantage, column = 0.0, [0.0] * len(delta)
        for step in range(len(delta) - 1, -1, -1):
            advantage = delta[step] + decay[step] * advantage
            column[step] = advantage
        advantages.append(column)
    return np.array(advantages, dtype=np.float32).T


def add_to_buffer(
    direct: bool,
    buffer: RolloutBuffer,
    obs: np.ndarray | dict[str, np.ndarray],
    action: np.ndarray,
    reward: np.ndarray,
    episode_start: np.ndarray,
    value: th.Tensor,
    log_prob: th.Tensor,
    **step_inputs: Any,
) -> None:
    """
    ``buffer.add(...)``, with ``step_inputs`` (a maskable buffer's ``action_masks``) by keyword; with ``direct``, for
    SB3's own RolloutBuffer, the same entries written without its defensive copies (the assignment into the buffer's
    arrays copies already; the tensors are not cloned before their conversion). Any other buffer class gets its own
    ``add``.
    """
    if not direct or type(buffer) is not RolloutBuffer or log_prob.dim() == 0 or step_inputs:
        buffer.add(obs, action, reward, episode_start, value, log_prob, **step_inputs)  # type: ignore[arg-type]
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
