"""
Recurrent policies for the natural-gradient algorithms, on sb3-contrib's recurrent machinery: its LSTM policies
(``RecurrentActorCriticPolicy``), buffers (``RecurrentRolloutBuffer``) and ``predict(obs, state=..., episode_start=...)``,
used as with RecurrentPPO.

The policy step reads the rollout as whole sequences, one per environment: the LSTM runs over each environment's
steps from the states the rollout started from, reset at episode starts, exactly as it ran while acting
(docs/algorithm.md §4). Every state of the rollout enters the gradient, the KL and the Fisher; sub-sampling keeps
whole sequences.
"""

from typing import Any, ClassVar

import numpy as np
import torch as th
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from sb3_contrib.ppo_recurrent.policies import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_ext.critic import fit_sequence_critic
from sb3_trpo_ext.fast_paths import FastPaths
from sb3_trpo_ext.hyperparameters import HyperparameterError
from sb3_trpo_ext.kinds import PolicyKind, set_up
from sb3_trpo_ext.policies import PolicyInputs, SequenceInputs, map_observations, per_sample
from sb3_trpo_ext.rollout import RolloutActor
from sb3_trpo_ext.trpo import TRPO


def _initial_states(buffer: RecurrentRolloutBuffer, hidden: np.ndarray, cell: np.ndarray) -> tuple[th.Tensor, th.Tensor]:
    """The LSTM states (layers, n_envs, size) each environment's rollout started from, from the buffer's per-step ones."""
    if buffer.generator_ready:  # flattened by get(): (n_envs * n_steps, layers, size)
        return tuple(buffer.to_torch(state[:: buffer.buffer_size].swapaxes(0, 1)).contiguous() for state in (hidden, cell))  # type: ignore[return-value]
    return buffer.to_torch(hidden[0]).contiguous(), buffer.to_torch(cell[0]).contiguous()  # (n_steps, layers, n_envs, size)


def whole_sequences(buffer: RecurrentRolloutBuffer) -> tuple[SequenceInputs, th.Tensor, th.Tensor]:
    """
    The rollout as one sequence per environment, sequence-major: what the policy reads (observations, the LSTM states
    each sequence started from, the episode starts), the actions and the advantages.
    """
    rows = per_sample(buffer)
    inputs = SequenceInputs(
        map_observations(rows, buffer.observations),
        actor_states=_initial_states(buffer, buffer.hidden_states_pi, buffer.cell_states_pi),
        critic_states=_initial_states(buffer, buffer.hidden_states_vf, buffer.cell_states_vf),
        episode_starts=rows(buffer.episode_starts).flatten(),
    )
    return inputs, rows(buffer.actions), rows(buffer.advantages).flatten()


class RecurrentPolicy(PolicyKind):
    """
    sb3-contrib's LSTM policies and recurrent buffers: the LSTM states carried through the rollout and stored with
    each step, the policy step over whole sequences, and a critic fit over sequences (the critic's own LSTM, or the
    actor's when shared, which the critic never trains).
    """

    acts_on_observations_alone = False
    label = "recurrent policy, which RecurrentTRPO takes"

    aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpLstmPolicy": MlpLstmPolicy,
        "CnnLstmPolicy": CnnLstmPolicy,
        "MultiInputLstmPolicy": MultiInputLstmPolicy,
    }
    policy_class = RecurrentActorCriticPolicy
    others = ()
    buffer_classes = (RecurrentRolloutBuffer, RecurrentDictRolloutBuffer)
    #: The LSTM states before the current step, and after it (from the policy's forward).
    last_states: RNNStates
    next_states: RNNStates

    def validate(self, algorithm: OnPolicyAlgorithm) -> None:
        if algorithm.env is not None and algorithm.sub_sampling_factor > algorithm.env.num_envs:  # type: ignore[attr-defined]
            raise HyperparameterError(
                f"sub_sampling_factor must be <= n_envs = {algorithm.env.num_envs} for {type(algorithm).__name__}: the "
                "Fisher is sub-sampled by whole sequences, one per environment; got "
                f"{algorithm.sub_sampling_factor}"  # type: ignore[attr-defined]
            )

    def build(self, algorithm: OnPolicyAlgorithm) -> None:
        """As RecurrentPPO builds them, with zero LSTM states to start the first rollout from."""

        def states_shape(policy: RecurrentActorCriticPolicy) -> dict[str, Any]:
            lstm = policy.lstm_actor
            return {"hidden_state_shape": (algorithm.n_steps, lstm.num_layers, algorithm.n_envs, lstm.hidden_size)}

        policy = set_up(algorithm, *self.classes(algorithm), buffer_arguments=states_shape, use_sde=algorithm.use_sde)
        lstm: th.nn.LSTM = policy.lstm_actor
        zeros = th.zeros(lstm.num_layers, algorithm.n_envs, lstm.hidden_size, device=algorithm.device)
        self.last_states = RNNStates((zeros, zeros.clone()), (zeros.clone(), zeros.clone()))

    # The rollout, as RecurrentPPO's: the states before each step are stored with it.

    def step_inputs(self, env: VecEnv) -> dict[str, Any]:
        return {"lstm_states": self.last_states}

    def act(
        self, policy: Any, actor: RolloutActor, observations: PyTorchObs, episode_starts: Any, step_inputs: dict
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        starts = th.tensor(episode_starts, dtype=th.float32, device=policy.device)
        actions, values, log_probs, self.next_states = policy(observations, self.last_states, starts)
        return actions, values, log_probs

    def terminal_value(self, policy: Any, terminal_observation: PyTorchObs, env_index: int) -> th.Tensor:
        hidden, cell = self.next_states.vf
        state = (hidden[:, env_index : env_index + 1].contiguous(), cell[:, env_index : env_index + 1].contiguous())
        not_a_start = th.zeros(1, dtype=th.float32, device=policy.device)
        return policy.predict_values(terminal_observation, state, not_a_start)[0]

    def step_taken(self) -> None:
        self.last_states = self.next_states

    def last_values(self, policy: Any, observations: PyTorchObs, dones: np.ndarray) -> th.Tensor:
        episode_starts = th.tensor(dones, dtype=th.float32, device=policy.device)
        return policy.predict_values(observations, self.last_states.vf, episode_starts)

    # The update.

    def batch(self, buffer: Any) -> tuple[PolicyInputs, th.Tensor, th.Tensor]:
        return whole_sequences(buffer)

    def fit_critic(
        self, policy: Any, critic_params: list[th.nn.Parameter], buffer: Any, n_epochs: int, batch_size: int,
        fast: FastPaths,
    ) -> float | None:  # fmt: skip
        return fit_sequence_critic(policy, critic_params, buffer, n_epochs, batch_size)


class RecurrentTRPO(TRPO):
    """
    TRPO with an LSTM policy, used as sb3-contrib's RecurrentPPO is (policies ``MlpLstmPolicy``, ``CnnLstmPolicy``,
    ``MultiInputLstmPolicy``, sb3-contrib's recurrent ones; ``predict(obs, state=..., episode_start=...)``). The
    gradient, the KL and the Fisher are those of the whole sequences the rollout collected, through the LSTM from the
    states it started from.

    :param policy: The policy model to use (MlpLstmPolicy, CnnLstmPolicy, MultiInputLstmPolicy or a
        RecurrentActorCriticPolicy class)
    :param sub_sampling_factor: Use every k-th environment's sequence of the batch for the Fisher-vector products
        only (the gradient and the step always use the whole batch), so it is at most ``n_envs``
    """

    policy_kind = RecurrentPolicy
