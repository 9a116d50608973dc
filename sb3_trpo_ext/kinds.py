"""
Kinds of policy: what a kind supplies to the natural-gradient core, which holds one (``policy_kind``). This module's
:class:`PolicyKind` is SB3's actor-critic policies with SB3's buffers; sb3-contrib's maskable and recurrent policies
are :class:`~sb3_trpo_ext.maskable.MaskedPolicy` and :class:`~sb3_trpo_ext.recurrent.RecurrentPolicy`
(docs/variants.md has the table of what each supplies).
"""

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, RolloutBufferSamples
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_ext.fast_paths import FastPaths
from sb3_trpo_ext.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, PolicyInputs
from sb3_trpo_ext.rollout import RolloutActor


class PolicyKind:
    """
    SB3's actor-critic policies (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy``, any ``ActorCriticPolicy``) and
    SB3's rollout buffers: in the rollout the policy reads the observation alone; the update reads the rollout as one
    batch of states; the critic fits minibatches of states.

    One instance per model, made with it: a kind may keep what the rollout carries from step to step.
    """

    #: The policy names an algorithm holding this kind takes (its ``policy_aliases``).
    aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    #: The policies and buffers (for Dict observations, the second) of this kind; ``others`` are another kind's.
    policy_class: ClassVar[type[BasePolicy]] = ActorCriticPolicy
    others: ClassVar[tuple[type[BasePolicy], ...]] = (RecurrentActorCriticPolicy,)
    buffer_classes: ClassVar[tuple[type[RolloutBuffer], type[RolloutBuffer]]] = (RolloutBuffer, DictRolloutBuffer)
    #: What the kind is called in messages, with the algorithms that hold it.
    label: ClassVar[str] = "SB3 actor-critic policy, which TRPO and NPG take"
    #: Whether the policy acts on the observations alone, as ``policy(observations)``: no masks, no states.
    acts_on_observations_alone: ClassVar[bool] = True

    @classmethod
    def holds(cls, policy_class: Any) -> bool:
        """Whether ``policy_class`` is a policy of this kind."""
        return (
            isinstance(policy_class, type)
            and issubclass(policy_class, cls.policy_class)
            and not issubclass(policy_class, cls.others)
        )

    def validate(self, algorithm: OnPolicyAlgorithm) -> None:
        """Raise a HyperparameterError for a setting this kind cannot take."""

    def classes(self, algorithm: OnPolicyAlgorithm) -> tuple[type[Any], type[Any]]:
        """
        The policy class and the rollout buffer class: refuse a policy that is not this kind's (a ValueError, also for
        another kind's model being loaded); take this kind's buffer (for Dict observations its Dict variant) when none
        is given, and refuse one that is neither.
        """
        policy_class = algorithm.policy_class
        if not self.holds(policy_class):
            other = next((kind for kind in _kinds() if kind.holds(policy_class)), None)
            of_kind = f", a {other.label}" if other is not None else ""
            raise ValueError(
                f"policy must subclass {self.policy_class.__name__} (or be an alias of one: {sorted(self.aliases)}) "
                f"for {type(algorithm).__name__}, got {getattr(policy_class, '__name__', repr(policy_class))}{of_kind}"
            )
        buffer, dict_buffer = self.buffer_classes
        if algorithm.rollout_buffer_class is None:
            algorithm.rollout_buffer_class = dict_buffer if isinstance(algorithm.observation_space, spaces.Dict) else buffer
        if not issubclass(algorithm.rollout_buffer_class, (buffer, dict_buffer)):
            raise ValueError(
                f"rollout_buffer_class must be a {buffer.__name__} or {dict_buffer.__name__} (sub)class, "
                f"got {algorithm.rollout_buffer_class}"
            )
        return policy_class, algorithm.rollout_buffer_class

    def build(self, algorithm: OnPolicyAlgorithm) -> None:
        """The learning-rate schedule, the seed, the policy and the rollout buffer, as SB3's on-policy algorithms."""
        set_up(algorithm, *self.classes(algorithm), use_sde=algorithm.use_sde)

    # The rollout, step by step (in inference mode).

    def step_inputs(self, env: VecEnv) -> dict[str, Any]:
        """What the buffer stores with this step besides SB3's entries, by keyword (the policy reads it too)."""
        return {}

    def act(
        self, policy: Any, actor: RolloutActor, observations: PyTorchObs, episode_starts: Any, step_inputs: dict
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Sampled actions, their values and log-probabilities for the current observations."""
        return actor(observations, **step_inputs)

    def terminal_value(self, policy: Any, terminal_observation: PyTorchObs, env_index: int) -> th.Tensor:
        """V of the last observation of an episode of env ``env_index`` cut by a time limit, to bootstrap with."""
        return policy.predict_values(terminal_observation)[0]

    def step_taken(self) -> None:
        """After a step is recorded in the buffer."""

    def last_values(self, policy: Any, observations: PyTorchObs, dones: np.ndarray) -> th.Tensor:
        """V of the observations after the rollout's last step, for GAE."""
        return policy.predict_values(observations)

    # The update.

    def batch(self, buffer: RolloutBuffer) -> tuple[PolicyInputs, th.Tensor, th.Tensor]:
        """The whole rollout, as the buffer gives it: what the policy reads on its states, the actions, the advantages."""
        data = next(buffer.get(batch_size=None))
        return self.inputs(data), data.actions, data.advantages

    def inputs(self, data: RolloutBufferSamples) -> PolicyInputs:
        """What the policy reads on the states of ``data``."""
        return PolicyInputs(data.observations)

    def fit_critic(
        self, policy: Any, critic_params: list[th.nn.Parameter], buffer: RolloutBuffer, n_epochs: int, batch_size: int,
        fast: FastPaths,
    ) -> float | None:  # fmt: skip
        """The critic's fit (docs/algorithm.md §7) on the rollout; the mean minibatch loss, or None."""
        return fast.fit_critic(policy, critic_params, buffer, n_epochs, batch_size)


def set_up(
    algorithm: OnPolicyAlgorithm,
    policy_class: type[Any],
    buffer_class: type[Any],
    buffer_arguments: Callable[[Any], dict[str, Any]] | None = None,
    **policy_arguments: Any,
) -> Any:
    """
    What SB3's on-policy algorithms set up (``OnPolicyAlgorithm._setup_model``), for a policy and buffer of any kind:
    the learning-rate schedule, the seed, then the policy (its initial weights are the seeded generator's first draws)
    and its rollout buffer. ``policy_arguments`` go to the policy besides its ``policy_kwargs``; ``buffer_arguments``
    gives the buffer's own from the built policy. Returns the policy.
    """
    algorithm._setup_lr_schedule()
    algorithm.set_random_seed(algorithm.seed)
    policy = policy_class(
        algorithm.observation_space, algorithm.action_space, algorithm.lr_schedule, **policy_arguments,
        **algorithm.policy_kwargs,
    ).to(algorithm.device)  # fmt: skip
    algorithm.policy = policy
    algorithm.rollout_buffer = buffer_class(
        algorithm.n_steps,
        algorithm.observation_space,
        algorithm.action_space,
        device=algorithm.device,
        gamma=algorithm.gamma,
        gae_lambda=algorithm.gae_lambda,
        n_envs=algorithm.n_envs,
        **(buffer_arguments(policy) if buffer_arguments else {}),
        **algorithm.rollout_buffer_kwargs,
    )
    algorithm._maybe_recommend_cpu()  # SB3's warning for an MLP policy on a GPU
    return policy


def _kinds() -> list[type[PolicyKind]]:
    """Every kind of policy: this one and its subclasses (the maskable and recurrent kinds)."""
    return [PolicyKind, *PolicyKind.__subclasses__()]
