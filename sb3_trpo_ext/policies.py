"""Policies (SB3's actor-critic policies) and which of their parameters belong to the actor and the critic."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import torch as th
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy
from torch import nn

MlpPolicy = ActorCriticPolicy
CnnPolicy = ActorCriticCnnPolicy
MultiInputPolicy = MultiInputActorCriticPolicy


def _parameters_reached_by(outputs: Sequence[th.Tensor], policy: nn.Module) -> list[nn.Parameter]:
    params = [param for param in policy.parameters() if param.requires_grad]
    total = cast(th.Tensor, sum(out.sum() for out in outputs))
    grads = th.autograd.grad(total, params, allow_unused=True)
    return [param for param, grad in zip(params, grads, strict=True) if grad is not None]


@contextmanager
def _probing(policy: ActorCriticPolicy) -> Iterator[th.Tensor]:
    """
    A sample observation to trace the policy's graph with, in evaluation mode: a batch of one is what BatchNorm
    refuses in training mode, and a probe must not move its running statistics.
    """
    training = policy.training
    policy.set_training_mode(False)
    try:
        observation, _ = policy.obs_to_tensor(policy.observation_space.sample())
        yield observation  # type: ignore[misc]
    finally:
        policy.set_training_mode(training)


def actor_parameters(policy: ActorCriticPolicy) -> list[nn.Parameter]:
    """
    The parameters the action distribution depends on, found through the autograd graph of the
    distribution's own tensors on a sample observation, so custom policies work without naming conventions.
    """
    with _probing(policy) as observation:
        distribution = policy.get_distribution(observation)
    # MultiCategorical holds one torch distribution per sub-space, the others a single one.
    torch_distributions = distribution.distribution
    if not isinstance(torch_distributions, list):
        torch_distributions = [torch_distributions]
    outputs = [tensor for dist in torch_distributions for tensor in vars(dist).values() if isinstance(tensor, th.Tensor)]
    params = _parameters_reached_by(outputs, policy)
    distribution.distribution = None  # type: ignore[assignment]  # the probe's graph would stop the policy from being deep-copied
    return params


def critic_parameters(policy: ActorCriticPolicy, actor_params: Sequence[nn.Parameter]) -> list[nn.Parameter]:
    """
    The parameters the value depends on and the action distribution does not (``actor_params``, from
    :func:`actor_parameters`): the only ones the critic trains, so fitting the value never moves the policy
    (also when a features extractor is shared).
    """
    actor = {id(param) for param in actor_params}
    with _probing(policy) as observation:
        value_params = _parameters_reached_by([policy.predict_values(observation)], policy)
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
