"""
Recurrent policies for the natural-gradient algorithms, on sb3-contrib's recurrent machinery: its LSTM policies
(``RecurrentActorCriticPolicy``), buffers (``RecurrentRolloutBuffer``) and ``predict(obs, state=..., episode_start=...)``,
used as with RecurrentPPO.

The policy step reads the rollout as whole sequences, one per environment: the LSTM runs over each environment's
steps from the states the rollout started from, reset at episode starts, exactly as it ran while acting
(docs/algorithm.md §4). Every state of the rollout enters the gradient, the KL and the Fisher; sub-sampling keeps
whole sequences.
"""

from typing import Any, ClassVar, cast

import numpy as np
import torch as th
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from sb3_contrib.ppo_recurrent.policies import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_ext.critic import fit_sequence_critic
from sb3_trpo_ext.hyperparameters import HyperparameterError
from sb3_trpo_ext.natural_gradient import NaturalGradientAlgorithm
from sb3_trpo_ext.policies import PolicyInputs, SequenceInputs
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

    def per_env(array: np.ndarray) -> th.Tensor:
        # (n_steps, n_envs, ...) -> (n_envs * n_steps, ...), each environment's steps in order; get() does the same.
        return buffer.to_torch(array if buffer.generator_ready else buffer.swap_and_flatten(array))

    observations: PyTorchObs
    if isinstance(buffer.observations, dict):
        observations = {key: per_env(value) for key, value in buffer.observations.items()}
    else:
        observations = per_env(buffer.observations)
    inputs = SequenceInputs(
        observations,
        actor_states=_initial_states(buffer, buffer.hidden_states_pi, buffer.cell_states_pi),
        critic_states=_initial_states(buffer, buffer.hidden_states_vf, buffer.cell_states_vf),
        episode_starts=per_env(buffer.episode_starts).flatten(),
    )
    return inputs, per_env(buffer.actions), per_env(buffer.advantages).flatten()


class Recurrence(NaturalGradientAlgorithm):
    """
    What recurrence adds to a natural-gradient algorithm: sb3-contrib's LSTM policy and recurrent buffer, the LSTM
    states carried through the rollout and stored with each step, the policy step over whole sequences, and a critic
    fit over sequences (the critic's own LSTM, or the actor's when shared, which the critic never trains). Combined
    with an algorithm as ``class RecurrentTRPO(Recurrence, TRPO)``.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpLstmPolicy": MlpLstmPolicy,
        "CnnLstmPolicy": CnnLstmPolicy,
        "MultiInputLstmPolicy": MultiInputLstmPolicy,
    }
    policy: RecurrentActorCriticPolicy
    rollout_buffer: RecurrentRolloutBuffer
    _last_lstm_states: RNNStates
    _next_lstm_states: RNNStates

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        if self.env is not None and self.sub_sampling_factor > self.env.num_envs:
            raise HyperparameterError(
                f"sub_sampling_factor must be <= n_envs = {self.env.num_envs} for {type(self).__name__}: the Fisher is "
                f"sub-sampled by whole sequences, one per environment; got {self.sub_sampling_factor}"
            )

    def _build_policy_and_buffer(self) -> None:
        """As RecurrentPPO builds them, with zero LSTM states to start the first rollout from."""
        policy_class, buffer_class = self._choose_classes(
            RecurrentActorCriticPolicy, RecurrentRolloutBuffer, RecurrentDictRolloutBuffer
        )
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        policy = policy_class(
            self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
        )
        self.policy = policy.to(self.device)
        lstm = self.policy.lstm_actor
        zeros = th.zeros(lstm.num_layers, self.n_envs, lstm.hidden_size, device=self.device)
        self._last_lstm_states = RNNStates((zeros, zeros.clone()), (zeros.clone(), zeros.clone()))
        # Both recurrent buffers take the LSTM states' shape after the spaces.
        self.rollout_buffer = cast(type[RecurrentRolloutBuffer], buffer_class)(
            self.n_steps,
            self.observation_space,
            self.action_space,
            (self.n_steps, lstm.num_layers, self.n_envs, lstm.hidden_size),
            self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            **self.rollout_buffer_kwargs,
        )

    # The rollout, as RecurrentPPO's: the states before each step are stored with it.

    def _rollout_step_inputs(self, env: VecEnv) -> dict[str, Any]:
        return {"lstm_states": self._last_lstm_states}

    def _act(self, observations: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        episode_starts = th.tensor(self._last_episode_starts, dtype=th.float32, device=self.device)
        actions, values, log_probs, self._next_lstm_states = self.policy(
            observations,
            self._last_lstm_states,
            episode_starts,
        )
        return actions, values, log_probs

    def _terminal_value(self, terminal_observation: PyTorchObs, env_index: int) -> th.Tensor:
        hidden, cell = self._next_lstm_states.vf
        state = (hidden[:, env_index : env_index + 1].contiguous(), cell[:, env_index : env_index + 1].contiguous())
        not_a_start = th.zeros(1, dtype=th.float32, device=self.device)
        return self.policy.predict_values(terminal_observation, state, not_a_start)[0]  # type: ignore[arg-type]

    def _step_taken(self) -> None:
        self._last_lstm_states = self._next_lstm_states

    def _last_values(self, observations: PyTorchObs, dones: np.ndarray) -> th.Tensor:
        episode_starts = th.tensor(dones, dtype=th.float32, device=self.device)
        return self.policy.predict_values(observations, self._last_lstm_states.vf, episode_starts)  # type: ignore[arg-type]

    # The update.

    def _rollout_batch(self) -> tuple[PolicyInputs, th.Tensor, th.Tensor]:
        return whole_sequences(self.rollout_buffer)

    def _fit_critic(self) -> float | None:
        return fit_sequence_critic(
            self.policy, self._critic_params, self.rollout_buffer, self.n_critic_updates, self.batch_size
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_last_lstm_states", "_next_lstm_states"]


class RecurrentTRPO(Recurrence, TRPO):
    """
    TRPO with an LSTM policy, used as sb3-contrib's RecurrentPPO is (policies ``MlpLstmPolicy``, ``CnnLstmPolicy``,
    ``MultiInputLstmPolicy``, sb3-contrib's recurrent ones; ``predict(obs, state=..., episode_start=...)``). The
    gradient, the KL and the Fisher are those of the whole sequences the rollout collected, through the LSTM from the
    states it started from. The parameters are TRPO's; ``sub_sampling_factor`` keeps every k-th environment's
    sequence, so it is at most ``n_envs``.
    """
