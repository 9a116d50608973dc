"""
Policies (SB3's actor-critic policies, sb3-contrib's maskable ones), what they read to give their action distribution
on a batch of states, and which of their parameters belong to the actor and the critic.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch as th
from sb3_contrib.common.maskable.distributions import MaskableMultiCategoricalDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

MlpPolicy = ActorCriticPolicy
CnnPolicy = ActorCriticCnnPolicy
MultiInputPolicy = MultiInputActorCriticPolicy

#: The policies the natural-gradient algorithms train: SB3's actor-critic policies and sb3-contrib's maskable and
#: recurrent ones.
ActorCritic = ActorCriticPolicy | MaskableActorCriticPolicy


def map_observations(function: Callable[[Any], Any], observations: Any) -> Any:
    """``function`` applied to an observation batch, or to each of a Dict observation's batches."""
    if isinstance(observations, dict):
        return {key: function(value) for key, value in observations.items()}
    return function(observations)


def per_sample(buffer: Any) -> Callable[[np.ndarray], th.Tensor]:
    """
    A rollout buffer's per-step array -> one row per sample as a tensor, environment by environment (the order
    ``RolloutBuffer.get`` gives); its arrays are already so after a ``get()``.
    """
    if buffer.generator_ready:
        return buffer.to_torch
    return lambda array: buffer.to_torch(buffer.swap_and_flatten(array))


@dataclass(frozen=True)
class PolicyInputs:
    """
    What the policy reads to give its action distribution on a batch of states.

    :param observations: the states s
    :param action_masks: which actions each state allows (True: allowed), for a maskable policy; None: all
    """

    observations: PyTorchObs
    action_masks: th.Tensor | None = None

    def distribution(self, policy: ActorCritic) -> Distribution:
        """pi_theta(.|s) on the batch at the policy's current parameters (masked actions have probability 0)."""
        if self.action_masks is None:
            return policy.get_distribution(self.observations)
        assert isinstance(policy, MaskableActorCriticPolicy), "action masks need a maskable policy"
        # sb3-contrib reads masks with th.as_tensor: a tensor, converted once, is taken as it is.
        return policy.get_distribution(self.observations, action_masks=self.action_masks)  # type: ignore[arg-type]

    def every(self, k: int) -> "PolicyInputs":
        """Every k-th state, for the Fisher-vector products (docs/algorithm.md §4)."""
        if k == 1:
            return self
        observations = map_observations(lambda value: value[::k], self.observations)
        return PolicyInputs(observations, None if self.action_masks is None else self.action_masks[::k])

    def values(self, policy: ActorCritic) -> th.Tensor:
        """V(s) on the batch."""
        return policy.predict_values(self.observations)


@dataclass(frozen=True, kw_only=True)
class SequenceInputs(PolicyInputs):
    """
    What a recurrent policy reads on whole sequences: ``n_seq`` sequences of equal length one after the other
    (sequence-major), the LSTM states each sequence started from in the rollout, and the episode starts inside them,
    where the LSTM states are reset (docs/algorithm.md §4).

    :param actor_states: (hidden, cell) of the actor's LSTM at each sequence's first step, each (layers, n_seq, size)
    :param critic_states: the same for the critic's LSTM (the actor's when the critic has none of its own)
    :param episode_starts: 1.0 where an episode starts, shape (n_seq * length,)
    """

    actor_states: tuple[th.Tensor, th.Tensor]
    critic_states: tuple[th.Tensor, th.Tensor]
    episode_starts: th.Tensor

    def distribution(self, policy: ActorCritic) -> Distribution:
        assert isinstance(policy, RecurrentActorCriticPolicy), "sequences need a recurrent policy"
        return policy.get_distribution(self.observations, self.actor_states, self.episode_starts)[0]  # type: ignore[arg-type]

    def values(self, policy: ActorCritic) -> th.Tensor:
        assert isinstance(policy, RecurrentActorCriticPolicy), "sequences need a recurrent policy"
        return policy.predict_values(self.observations, self.critic_states, self.episode_starts)  # type: ignore[arg-type]

    def every(self, k: int) -> "SequenceInputs":
        """Every k-th whole sequence (docs/algorithm.md §4): each keeps the LSTM states it started from."""
        if k == 1:
            return self
        n_seq = self.actor_states[0].shape[1]

        def sequences(tensor: th.Tensor) -> th.Tensor:
            return tensor.reshape(n_seq, -1, *tensor.shape[1:])[::k].flatten(0, 1)

        return SequenceInputs(
            map_observations(sequences, self.observations),
            actor_states=(self.actor_states[0][:, ::k], self.actor_states[1][:, ::k]),
            critic_states=(self.critic_states[0][:, ::k], self.critic_states[1][:, ::k]),
            episode_starts=sequences(self.episode_starts),
        )


def probe_inputs(policy: ActorCritic) -> PolicyInputs:
    """One sample observation as the policy reads it (a recurrent policy from zero LSTM states, at an episode start)."""
    observation, _ = policy.obs_to_tensor(policy.observation_space.sample())
    if not isinstance(policy, RecurrentActorCriticPolicy):
        return PolicyInputs(observation)
    lstm = policy.lstm_actor
    zeros = th.zeros(lstm.num_layers, 1, lstm.hidden_size, device=policy.device)
    starts = th.ones(1, device=policy.device)
    return SequenceInputs(observation, actor_states=(zeros, zeros), critic_states=(zeros, zeros), episode_starts=starts)


def torch_distributions(distribution: Distribution) -> list[th.distributions.Distribution]:
    """The torch distributions an SB3 distribution holds: one per sub-space of a MultiDiscrete space (or a masked
    MultiBinary one), else one."""
    if isinstance(distribution, MaskableMultiCategoricalDistribution):
        return list(distribution.distributions)
    inner = distribution.distribution
    return list(inner) if isinstance(inner, list) else [inner]


def _parameters_reached_by(outputs: Sequence[th.Tensor], policy: nn.Module) -> list[nn.Parameter]:
    params = [param for param in policy.parameters() if param.requires_grad]
    total = cast(th.Tensor, sum(out.sum() for out in outputs))
    grads = th.autograd.grad(total, params, allow_unused=True)
    return [param for param, grad in zip(params, grads, strict=True) if grad is not None]


@contextmanager
def _probing(policy: ActorCritic) -> Iterator[PolicyInputs]:
    """
    A sample observation to trace the policy's graph with, in evaluation mode: a batch of one is what BatchNorm
    refuses in training mode, and a probe must not move its running statistics.
    """
    training = policy.training
    policy.set_training_mode(False)
    try:
        yield probe_inputs(policy)
    finally:
        policy.set_training_mode(training)


def actor_parameters(policy: ActorCritic) -> list[nn.Parameter]:
    """
    The parameters the action distribution depends on, found through the autograd graph of the
    distribution's own tensors on a sample observation, so custom policies work without naming conventions.
    """
    with _probing(policy) as inputs:
        distribution = inputs.distribution(policy)
    outputs = [
        tensor for dist in torch_distributions(distribution) for tensor in vars(dist).values() if isinstance(tensor, th.Tensor)
    ]
    params = _parameters_reached_by(outputs, policy)
    # The probe's graph would stop the policy from being deep-copied.
    if isinstance(distribution, MaskableMultiCategoricalDistribution):
        distribution.distributions = []
    else:
        distribution.distribution = None  # type: ignore[assignment]
    return params


def critic_parameters(policy: ActorCritic, actor_params: Sequence[nn.Parameter]) -> list[nn.Parameter]:
    """
    The parameters the value depends on and the action distribution does not (``actor_params``, from
    :func:`actor_parameters`): the only ones the critic trains, so fitting the value never moves the policy
    (also when a features extractor is shared).
    """
    actor = {id(param) for param in actor_params}
    with _probing(policy) as inputs:
        value_params = _parameters_reached_by([inputs.values(policy)], policy)
    return [param for param in value_params if id(param) not in actor]


def flat_parameters(params: Sequence[nn.Parameter]) -> th.Tensor:
    """theta as one new vector (a copy, not a view)."""
    return th.cat([param.detach().reshape(-1) for param in params])


def unflatten(vector: th.Tensor, params: Sequence[nn.Parameter]) -> list[th.Tensor]:
    """A flat vector cut into views shaped as ``params``, in their order (the inverse of :func:`flat_parameters`)."""
    chunks = vector.split([param.numel() for param in params])
    return [chunk.view(param.shape) for chunk, param in zip(chunks, params, strict=True)]


@th.no_grad()
def set_flat_parameters(params: Sequence[nn.Parameter], theta: th.Tensor) -> None:
    """Write the vector ``theta`` into ``params`` in place (bit for bit)."""
    for param, chunk in zip(params, unflatten(theta, params), strict=True):
        param.copy_(chunk)
