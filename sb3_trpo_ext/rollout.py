"""
The rollout: SB3's loop, step for step (the same random draws, buffer contents, callback calls and locals, timeout
bootstrapping and episode infos), with less work per step on the fast paths: acting (sampled actions, values,
log-probabilities) and recording the step in the rollout buffer.
"""

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from torch.nn import functional as F

from sb3_trpo_ext.mlp import MlpNetwork, action_distribution, actor_features, critic_features
from sb3_trpo_ext.rollout_checks import describe_nonfinite_observation
from sb3_trpo_ext.torch_private import distribution_checks_off, version_of

if TYPE_CHECKING:  # both import this module
    from sb3_trpo_ext.fast_paths import FastPaths
    from sb3_trpo_ext.kinds import PolicyKind

#: observations (and what else the policy reads at a step, by keyword) -> (sampled actions, values,
#: log-probabilities): ``policy(observations, ...)`` as the rollout calls it.
RolloutActor = Callable[..., tuple[th.Tensor, th.Tensor, th.Tensor]]


class MlpRolloutActor:
    """
    The rollout actor of an MLP policy: sampled actions, their values and log-probabilities, with the actor and
    critic networks of :func:`actor_network` and :func:`critic_network`, and every number the one SB3's forward
    computes (the same kernels in the same order, the same random draws).

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


class RolloutLoop(OnPolicyAlgorithm):
    """
    An on-policy algorithm whose ``collect_rollouts`` takes its fast paths (``_fast_paths``) and acts as its kind of
    policy (``_kind``) says; both are set up by the subclass.
    """

    _fast_paths: "FastPaths"
    _kind: "PolicyKind"
    _rollout_actor: RolloutActor
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
        (the same random draws, buffer contents, callback calls and locals, timeout bootstrapping and episode
        infos), with less work per step on the fast paths. The policy runs in inference mode (on the fast paths
        without torch.distributions' argument checks); an observation the policy cannot act on (NaN, infinite) is
        reported with its place instead.

        :return: False if a callback stopped the rollout early, True otherwise
        """
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        # The policy's tensor, then SB3's numpy array under the same name: callbacks read the loop's locals.
        actions: Any
        n_steps = 0
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        self._rollout_actor = self._fast_paths.rollout_actor(self.policy)
        callback.on_rollout_start()

        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            self._check_observation_is_finite(rollout_buffer.pos)
            self._step_inputs = self._kind.step_inputs(env)
            with th.inference_mode():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                actions, values, log_probs = self._kind.act(
                    self.policy, self._rollout_actor, obs_tensor, self._last_episode_starts, self._step_inputs
                )
            actions = actions.cpu().numpy()
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    # An unbounded Gaussian sample, clipped to the bounds the environment accepts.
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

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

            self._fast_paths.add_to_buffer(
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
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
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
