"""
The rollout: SB3's loop, step for step (the same random draws, callback calls and locals, timeout bootstrapping and
episode infos; the same buffer contents, to float32 rounding on the fast paths), with the work of each step done as
the model's fast paths say (:mod:`sb3_trpo_ext.rollout`).
"""

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_ext.fast_paths import FastPaths
from sb3_trpo_ext.kinds import PolicyKind
from sb3_trpo_ext.rollout import RolloutActing
from sb3_trpo_ext.rollout_checks import describe_nonfinite_observation


class RolloutLoop(OnPolicyAlgorithm):
    """
    An on-policy algorithm whose ``collect_rollouts`` takes its fast paths (``_speedups``) and acts as its kind of
    policy (``_kind``) says; both are set up by the subclass.
    """

    _speedups: FastPaths
    _kind: PolicyKind
    _rollout_acting: RolloutActing
    # Attributes, not locals: callbacks see the loop's locals, which stay SB3's.
    _step_inputs: dict[str, Any]

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """
        Collect ``n_rollout_steps`` steps per environment into ``rollout_buffer``: SB3's rollout loop, step for step
        (the same random draws, callback calls and locals, timeout bootstrapping and episode infos; the buffer's
        contents to float32 rounding on the fast paths, which do less work per step). The policy runs in inference
        mode (on the fast paths without torch.distributions' argument checks); an observation the policy cannot act on
        (NaN, infinite) is reported with its place instead.

        :return: False if a callback stopped the rollout early, True otherwise
        """
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        n_steps = 0
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        self._rollout_acting = self._speedups.rollout_acting(self.policy, self._kind)
        callback.on_rollout_start()

        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            self._check_observation_is_finite(rollout_buffer.pos)
            self._step_inputs = self._kind.step_inputs(env)
            obs_tensor, actions, values, log_probs = self._rollout_acting.act(
                self._last_obs, self._last_episode_starts, self._step_inputs
            )
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    # An unbounded Gaussian sample, clipped to the bounds the environment accepts.
                    clipped_actions = np.minimum(np.maximum(actions, self.action_space.low), self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs
            # Callbacks read the loop's variables under SB3's names (infos, dones, rewards, new_obs, ...).
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1
            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)

            # An episode cut by a time limit did not end: its last reward is bootstrapped with the value.
            for idx, done in enumerate(dones):
                if (
                    done
                    and infos[idx].get("terminal_observation") is not None
                    and infos[idx].get("TimeLimit.truncated", False)
                ):
                    terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    with th.inference_mode():
                        terminal_value = self._kind.terminal_value(self.policy, terminal_obs, idx)
                    rewards[idx] += self.gamma * terminal_value

            self._speedups.add_to_buffer(
                rollout_buffer,
                self._last_obs,
                actions,
                rewards,
                self._last_episode_starts,
                values,
                log_probs,
                **self._step_inputs,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
            self._kind.step_taken()

        with th.inference_mode():
            values = self._kind.last_values(self.policy, obs_as_tensor(new_obs, self.device), dones)  # type: ignore[arg-type]
        self._speedups.compute_returns_and_advantage(rollout_buffer, values, dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _check_observation_is_finite(self, step: int) -> None:
        problem = describe_nonfinite_observation(self._last_obs, step)
        if problem is not None:
            raise ValueError(
                f"The rollout holds {problem}; the policy cannot act on it, nothing was updated. "
                "Check the environment and its wrappers."
            )
