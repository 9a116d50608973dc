"""
Invalid-action masking for the natural-gradient algorithms, on sb3-contrib's maskable machinery: its policies
(``MaskableActorCriticPolicy``), buffers (``MaskableRolloutBuffer``), an environment's ``action_masks()`` (directly or
through ``ActionMasker``), ``predict(..., action_masks=...)`` and ``MaskableEvalCallback``, used as with MaskablePPO.

A masked action has probability zero under the policy, so it adds nothing to the surrogate, the KL or the Fisher
(docs/algorithm.md §2 and §4): the update is that of the distribution over the allowed actions only.
"""

from typing import Any, ClassVar, TypeVar

import numpy as np
from gymnasium import spaces
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer, MaskableRolloutBuffer
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from sb3_contrib.ppo_mask.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import MaybeCallback, RolloutBufferSamples
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_ext.hyperparameters import HyperparameterError
from sb3_trpo_ext.kinds import PolicyKind, set_up
from sb3_trpo_ext.natural_gradient import NaturalGradientAlgorithm
from sb3_trpo_ext.npg import NPG
from sb3_trpo_ext.policies import PolicyInputs
from sb3_trpo_ext.trpo import TRPO

SelfMaskable = TypeVar("SelfMaskable", bound="Maskable")

MASKABLE_ACTION_SPACES = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


class MaskedPolicy(PolicyKind):
    """
    sb3-contrib's maskable policies and buffers: the environment's masks read at every rollout step (while
    ``use_masking``) and stored with it, the policy evaluated with the stored masks in the update.
    """

    acts_on_observations_alone = False
    label = "maskable policy, which MaskableTRPO and MaskableNPG take"

    aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy_class = MaskableActorCriticPolicy
    others = ()
    buffer_classes = (MaskableRolloutBuffer, MaskableDictRolloutBuffer)
    #: Whether the rollout reads the environment's masks (``learn(..., use_masking=...)``).
    use_masking = True

    def validate(self, algorithm: OnPolicyAlgorithm) -> None:
        if not isinstance(algorithm.action_space, MASKABLE_ACTION_SPACES):
            allowed = [space.__name__ for space in MASKABLE_ACTION_SPACES]
            raise HyperparameterError(
                f"{type(algorithm).__name__} needs an action space in {allowed} to mask, got {algorithm.action_space}"
            )
        if algorithm.use_sde:
            raise HyperparameterError(
                f"use_sde must be False for {type(algorithm).__name__}: gSDE explores continuous actions"
            )

    def build(self, algorithm: OnPolicyAlgorithm) -> None:
        """As MaskablePPO builds them: no gSDE, a maskable buffer (for Dict observations its Dict variant)."""
        set_up(algorithm, *self.classes(algorithm))

    def step_inputs(self, env: VecEnv) -> dict[str, Any]:
        return {"action_masks": get_action_masks(env)} if self.use_masking else {}

    def inputs(self, data: RolloutBufferSamples) -> PolicyInputs:
        return PolicyInputs(data.observations, data.action_masks.bool())  # type: ignore[attr-defined]


class Maskable(NaturalGradientAlgorithm):
    """
    What a maskable algorithm shows its users beyond SB3's API, as sb3-contrib's MaskablePPO: ``learn(...,
    use_masking=...)`` and ``predict(..., action_masks=...)``; it holds the masked kind of policy. Composed with an
    algorithm as ``class MaskableTRPO(Maskable, TRPO)``.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy: sb3-contrib's maskable ones,
        or a MaskableActorCriticPolicy class)
    :param use_sde: Must stay False: gSDE explores continuous actions, and masking needs discrete ones
    :param sde_sample_freq: Unused: gSDE is off
    """

    policy_kind = MaskedPolicy
    _kind: MaskedPolicy
    policy: MaskableActorCriticPolicy  # type: ignore[assignment]

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        The policy's action for an observation, as SB3's ``predict``, choosing only among the actions
        ``action_masks`` allows (True: allowed); None allows every action.
        """
        return self.policy.predict(observation, state, episode_start, deterministic, action_masks=action_masks)

    def learn(  # type: ignore[override]
        self: SelfMaskable,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "",
        reset_num_timesteps: bool = True,
        use_masking: bool = True,
        progress_bar: bool = False,
    ) -> SelfMaskable:
        """
        As SB3's ``learn``, with ``use_masking``: read the environment's ``action_masks()`` at every rollout step
        (False: learn without masks, as the unmasked algorithm). ``tb_log_name`` defaults to the class name.
        """
        if use_masking and self.env is not None and not is_masking_supported(self.env):
            raise ValueError(
                "use_masking=True needs an environment with an action_masks() method; wrap it in "
                "sb3_contrib.common.wrappers.ActionMasker, or pass use_masking=False"
            )
        self._kind.use_masking = use_masking
        return super().learn(
            total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps,
            progress_bar=progress_bar,
        )  # fmt: skip


class MaskableTRPO(Maskable, TRPO):
    """
    TRPO with invalid-action masking, used as sb3-contrib's MaskablePPO is (Discrete, MultiDiscrete and MultiBinary
    actions; policies ``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy``, sb3-contrib's maskable ones). The trust
    region, the surrogate and the Fisher are those of the masked distribution.
    """


class MaskableNPG(Maskable, NPG):
    """
    NPG with invalid-action masking: NPG's whole natural-gradient step on the masked distribution, used as
    :class:`MaskableTRPO` is.
    """
