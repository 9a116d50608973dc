"""Trust Region Policy Optimization as a Stable-Baselines3 on-policy algorithm."""

import io
import pathlib
import warnings
from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from sb3_trpo_ext.fisher import kl_averaged_dimensions
from sb3_trpo_ext.hyperparameters import validate_line_search
from sb3_trpo_ext.line_search import LineSearchResult, backtracking_line_search
from sb3_trpo_ext.natural_gradient import NaturalGradientAlgorithm
from sb3_trpo_ext.saving import LOAD_ERRORS, saved_by_sb3_contrib
from sb3_trpo_ext.update import PolicyBatch, ProposedStep

SelfTRPO = TypeVar("SelfTRPO", bound="TRPO")


class TRPO(NaturalGradientAlgorithm):
    """
    Trust Region Policy Optimization (TRPO), with the trust region on the true KL of the action distribution.

    Paper: https://arxiv.org/abs/1502.05477; the update step by step: docs/algorithm.md. Each update maximises the
    surrogate L(theta) = E[A pi_theta(a|s) / pi_old(a|s)] subject to mean KL(pi_old || pi_theta) <= target_kl, by a
    natural-gradient step (conjugate gradient on Fisher-vector products) and a backtracking line search. The value
    function is fitted afterwards with its own optimiser over its own parameters only.

    The parameters are :class:`~sb3_trpo_ext.natural_gradient.NaturalGradientAlgorithm`'s, ``target_kl`` being the
    largest mean KL an update may take, and the line search's:

    :param line_search_shrinking_factor: Step-size reduction factor alpha of the line search
        (candidates are ``theta_old + alpha^j * beta * d``), in (0, 1)
    :param line_search_max_iter: The number of line-search candidates
    :param line_search_accept_ratio: A candidate must improve the surrogate by at least this fraction of the
        improvement the linear model expects (0 turns the ratio test off), in [0, 1)
    """

    has_line_search: ClassVar[bool] = True
    saved_hyperparameters: ClassVar[frozenset[str]] = NaturalGradientAlgorithm.saved_hyperparameters | {
        "line_search_shrinking_factor",
        "line_search_max_iter",
    }

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
        # Set first: the shared constructor validates every hyperparameter.
        self.line_search_shrinking_factor = line_search_shrinking_factor
        self.line_search_max_iter = line_search_max_iter
        self.line_search_accept_ratio = line_search_accept_ratio
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
            _init_setup_model=_init_setup_model,
        )

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        validate_line_search(self)

    @classmethod
    def load(
        cls: type[SelfTRPO],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfTRPO:
        """
        Load a model saved by this TRPO or, for ``TRPO`` itself, by sb3-contrib's (see ``BaseAlgorithm.load``).

        sb3-contrib's TRPO bounds and damps the KL averaged over A terms (the action dimensions of a Gaussian or
        Bernoulli policy, docs/algorithm.md §9), and its line search takes any improvement: its model is loaded with
        ``target_kl`` and ``cg_damping`` times A and ``line_search_accept_ratio=0``, the same step on the true KL,
        and a warning says so. A value passed here as a keyword is taken as it is.
        """
        try:
            from_sb3_contrib = cls is TRPO and saved_by_sb3_contrib(path)
        except LOAD_ERRORS:
            from_sb3_contrib = False  # not a model zip at all: the load below says so
        model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        if from_sb3_contrib:
            model._take_sb3_contrib_step(given=set(kwargs))
        return model

    def _take_sb3_contrib_step(self, given: set[str]) -> None:
        """Turn sb3-contrib's (delta, lambda) into this TRPO's (A delta, A lambda), and its line search's test into ours."""
        terms = kl_averaged_dimensions(self.action_space)
        changed = []
        for name in ("target_kl", "cg_damping"):  # numbers in sb3-contrib, which takes no schedule for either
            if name not in given and terms != 1:
                value = getattr(self, name)
                setattr(self, name, terms * value)
                changed.append(f"{name} {value!r} -> {terms * value!r}")
        if "line_search_accept_ratio" not in given:
            self.line_search_accept_ratio = 0.0
            changed.append("line_search_accept_ratio 0 (it takes any improvement)")
        self._validate_hyperparameters()
        if not changed:
            return
        warnings.warn(
            f"Loaded an sb3_contrib.TRPO model, whose trust region and damping apply to the KL averaged over {terms} "
            f"term(s); to take the same step on the true KL: {'; '.join(changed)}.",
            UserWarning,
            stacklevel=3,
        )

    @classmethod
    def _saved_by(cls) -> str:
        return super()._saved_by() + (" or sb3_contrib.TRPO" if cls is TRPO else "")

    def _policy_step(self, batch: PolicyBatch, proposed: ProposedStep) -> LineSearchResult:
        """Candidates theta_old + alpha^j beta d, each judged on the exact surrogate and KL (docs/algorithm.md §6)."""
        if proposed.full_step is None:
            return LineSearchResult.rejected(proposed.theta_old, n_candidates=0)
        return backtracking_line_search(
            lambda step: self._candidate(batch, proposed.theta_old, step),
            proposed.full_step,
            surrogate_before=proposed.surrogate_before,
            expected_improvement=proposed.expected_improvement,
            target_kl=proposed.target_kl,
            shrinking_factor=self.line_search_shrinking_factor,
            max_iter=self.line_search_max_iter,
            accept_ratio=self.line_search_accept_ratio,
        )
