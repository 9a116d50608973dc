"""
The speed-ups a model takes, decided once when it is set up (``TRPO(..., fast_paths=...)``): all, or none.

On: MLP actors and critics are evaluated and differentiated layer by layer (:mod:`sb3_trpo_ext.mlp`) in the
Fisher-vector products, the rollout and the critic's fit; the rollout acts without torch.distributions' argument
checks and fills SB3's RolloutBuffer without its defensive copies; the critic fits resident minibatches and, with
fused Adam, steps through the fused kernel on the optimiser's state. Off: every computation goes through SB3's and
torch's public API (``policy(obs)``, ``RolloutBuffer.add``/``get``, autograd, ``optimizer.step()``; the analytic
Fisher-vector products of actors that are no MLP network by double backprop, since their forward-mode form swaps
parameters through a private API). Tests check that both give the same update.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_trpo_ext.critic import critic_optimizer, fit_critic
from sb3_trpo_ext.fisher import FisherVectorProduct, fisher_vector_product
from sb3_trpo_ext.mlp import MlpNetwork, actor_network, critic_network
from sb3_trpo_ext.policies import PolicyInputs
from sb3_trpo_ext.rollout import (
    KindActs,
    MlpRolloutActor,
    NumpyRolloutActor,
    PolicyActing,
    RolloutActing,
    add_to_buffer,
    generalized_advantages,
)
from sb3_trpo_ext.torch_private import distribution_checks_off


@dataclass(frozen=True)
class FastPaths:
    """
    :param enabled: whether the fast paths are on
    :param actor: the actor as an MLP network (features -> distribution parameters), where it is one and enabled
    :param critic: the critic as an MLP network (features -> value), where it is one and enabled
    """

    enabled: bool
    actor: MlpNetwork | None = None
    critic: MlpNetwork | None = None

    # What the fast paths decide; nothing else reads whether they are on.

    def fisher_vector_product(
        self, policy: Any, inputs: PolicyInputs, params: Sequence[th.nn.Parameter], method: str, damping: float
    ) -> FisherVectorProduct:
        """v -> (F + damping I) v on ``inputs`` (:func:`~sb3_trpo_ext.fisher.fisher_vector_product`): layer by layer
        on the MLP actor; off, by double backprop wherever the analytic form would swap parameters privately."""
        return fisher_vector_product(policy, inputs, params, method, damping, self.actor, swap_parameters=self.enabled)

    def critic_optimizer(self, policy: Any, critic_params: Sequence[th.Tensor], learning_rate: float) -> th.optim.Optimizer:
        """The policy's optimiser class over the critic's parameters; fused Adam on the fast paths."""
        return critic_optimizer(policy, critic_params, learning_rate, fused=self.enabled)

    def fit_critic(
        self, policy: Any, critic_params: Sequence[th.Tensor], buffer: RolloutBuffer, n_epochs: int, batch_size: int
    ) -> float | None:
        """:func:`~sb3_trpo_ext.critic.fit_critic`: resident minibatches and the MLP critic's own steps when on."""
        return fit_critic(policy, critic_params, buffer, n_epochs, batch_size, self.critic, resident=self.enabled)

    def rollout_acting(self, policy: Any, kind: KindActs) -> RolloutActing:
        """
        How the rollout acts for one rollout: where the policy's networks are MLP networks and the fast paths are on,
        through them (in numpy on the CPU, for a kind that acts on the observations alone); else through
        ``policy(observations)`` (without torch.distributions' argument checks when on).
        """
        if self.actor is not None and self.critic is not None:
            if kind.acts_on_observations_alone and NumpyRolloutActor.takes(policy, self.actor, self.critic):
                return NumpyRolloutActor(policy, self.actor, self.critic)
            return PolicyActing(kind, policy, MlpRolloutActor(policy, self.actor, self.critic))
        if not self.enabled:
            return PolicyActing(kind, policy, policy)

        def act(observations: PyTorchObs, **step_inputs: Any) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
            with distribution_checks_off():
                return policy(observations, **step_inputs)

        return PolicyActing(kind, policy, act)

    def compute_returns_and_advantage(self, buffer: RolloutBuffer, last_values: th.Tensor, dones: np.ndarray) -> None:
        """``buffer.compute_returns_and_advantage``: on the fast paths, for SB3's own definition of it, GAE's recurrence
        over Python floats (:func:`~sb3_trpo_ext.rollout.generalized_advantages`)."""
        if not self.enabled or type(buffer).compute_returns_and_advantage is not RolloutBuffer.compute_returns_and_advantage:
            buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
            return
        buffer.advantages[:] = generalized_advantages(
            buffer.rewards, buffer.values, buffer.episode_starts, last_values.numpy(force=True).reshape(-1), dones,
            buffer.gamma, buffer.gae_lambda,
        )  # fmt: skip
        buffer.returns = buffer.advantages + buffer.values

    def add_to_buffer(self, buffer: RolloutBuffer, *entries: Any, **step_inputs: Any) -> None:
        """:func:`~sb3_trpo_ext.rollout.add_to_buffer`: ``buffer.add(...)``, on the fast paths without its copies."""
        add_to_buffer(self.enabled, buffer, *entries, **step_inputs)

    @classmethod
    def of(
        cls, policy: ActorCriticPolicy, actor_params: Sequence[th.Tensor], critic_params: Sequence[th.Tensor], enabled: bool
    ) -> "FastPaths":
        if not enabled:
            return cls(False)
        return cls(True, actor_network(policy, actor_params), critic_network(policy, critic_params))
