"""Trust Region Policy Optimization as a Stable-Baselines3 on-policy algorithm."""

from typing import Any

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from sb3_trpo_ext.hyperparameters import warn_if_the_last_minibatch_is_short
from sb3_trpo_ext.natural_gradient import NaturalGradientAlgorithm
from sb3_trpo_ext.step_rules import LineSearch


class TRPO(NaturalGradientAlgorithm):
    """
    Trust Region Policy Optimization (TRPO), with the trust region on the true KL of the action distribution.

    Paper: https://arxiv.org/abs/1502.05477; the update step by step: docs/algorithm.md. Each update maximises the
    surrogate L(theta) = E[A pi_theta(a|s) / pi_old(a|s)] subject to mean KL(pi_old || pi_theta) <= target_kl, by a
    natural-gradient step (conjugate gradient on Fisher-vector products) and a backtracking line search. The value
    function is fitted afterwards with its own optimiser over its own parameters only.

    :param line_search_shrinking_factor: Step-size reduction factor alpha of the line search
        (candidates are ``theta_old + alpha^j * beta * d``), in (0, 1)
    :param line_search_max_iter: The number of line-search candidates
    :param target_kl: The trust-region radius delta: the largest mean KL(pi_old || pi_new) an update may take (the
        line search accepts no candidate past it), with the KL of the whole action distribution (summed over action
        dimensions); it can be a function of the current progress remaining (from 1 to 0), like ``learning_rate``,
        whose value may fall to 0 (no step)
    :param line_search_accept_ratio: A candidate must improve the surrogate by at least this fraction of the
        improvement the linear model expects (0 turns the ratio test off), in [0, 1)
    """

    step_rule = LineSearch()

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 2048,
        batch_size: int = 128,
        gamma: float = 0.99,
        cg_max_steps: int = 15,
        cg_damping: float = 0.1,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        n_critic_updates: int = 10,
        gae_lambda: float = 0.95,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = True,
        target_kl: float | Schedule = 0.01,
        sub_sampling_factor: int = 1,
        ent_coef: float = 0.0,
        fvp_method: str = "auto",
        cg_residual_tol: float = 1e-5,
        line_search_accept_ratio: float = 0.1,
        on_nonfinite: str = "raise",
        fast_paths: bool = True,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            gamma=gamma,
            cg_max_steps=cg_max_steps,
            cg_damping=cg_damping,
            n_critic_updates=n_critic_updates,
            gae_lambda=gae_lambda,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            normalize_advantage=normalize_advantage,
            target_kl=target_kl,
            sub_sampling_factor=sub_sampling_factor,
            ent_coef=ent_coef,
            fvp_method=fvp_method,
            cg_residual_tol=cg_residual_tol,
            on_nonfinite=on_nonfinite,
            fast_paths=fast_paths,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self.line_search_shrinking_factor = line_search_shrinking_factor
        self.line_search_max_iter = line_search_max_iter
        self.line_search_accept_ratio = line_search_accept_ratio
        if _init_setup_model:
            self._setup_model()
            warn_if_the_last_minibatch_is_short(self)
