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

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_trpo_ext.mlp import MlpNetwork, actor_network, critic_network


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

    @classmethod
    def of(
        cls, policy: ActorCriticPolicy, actor_params: Sequence[th.Tensor], critic_params: Sequence[th.Tensor], enabled: bool
    ) -> "FastPaths":
        if not enabled:
            return cls(False)
        return cls(True, actor_network(policy, actor_params), critic_network(policy, critic_params))
