"""Trust Region Policy Optimization as a Stable-Baselines3 on-policy algorithm."""

import copy
import io
import json
import math
import pathlib
import pickle
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar, cast

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file, open_path
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, Schedule, TensorDict
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from sb3_trpo_ext.adam import OptimizerStep, optimizer_steps
from sb3_trpo_ext.conjugate_gradient import conjugate_gradient
from sb3_trpo_ext.dense import actor_network, critic_features, critic_network
from sb3_trpo_ext.fisher import FVP_METHODS, fisher_vector_product, flat_grad, kl_divergence, supports_analytic_fisher
from sb3_trpo_ext.line_search import Candidate, LineSearchResult, backtracking_line_search, max_step_size
from sb3_trpo_ext.policies import (
    CnnPolicy,
    MlpPolicy,
    MultiInputPolicy,
    actor_parameters,
    critic_parameters,
    flat_parameters,
    set_flat_parameters,
)
from sb3_trpo_ext.rollout import add_to_buffer, rollout_policy
from sb3_trpo_ext.rollout_checks import describe_nonfinite, describe_nonfinite_observation
from sb3_trpo_ext.surrogate import mean_entropy, normalize_advantages, surrogate_objective

SelfTRPO = TypeVar("SelfTRPO", bound="TRPO")

ON_NONFINITE = ("raise", "skip")
SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def numerical_fault(policy_gradient: th.Tensor, beta: float | None, search: LineSearchResult) -> str | None:
    """Why the policy step could not be taken, when a number went wrong; None for a sound (if rejected) step.
    ``beta`` is None when :func:`max_step_size` refused the curvature."""
    if not th.isfinite(policy_gradient).all():
        return "the policy gradient is not finite"
    if beta is None:
        return "the curvature d^T (F + lambda I) d is not finite and positive (zero gradient or failed Fisher products)"
    if search.n_candidates > 0 and search.n_nonfinite == search.n_candidates:
        return "every line-search candidate had a non-finite surrogate or KL"
    return None


#: Hyperparameters that both this TRPO and sb3-contrib's save, and no other algorithm does together.
SAVED_BY_A_TRPO = frozenset(
    {
        "target_kl",
        "cg_max_steps",
        "cg_damping",
        "line_search_shrinking_factor",
        "line_search_max_iter",
        "n_critic_updates",
        "sub_sampling_factor",
    }
)


def saved_attributes(path: str | pathlib.Path | io.BufferedIOBase) -> set[str]:
    """The names of the attributes a model zip saved (its ``data`` entry), without unpickling any of them."""
    file = open_path(path, "r", verbose=0, suffix="zip")
    position = file.tell()
    try:
        with zipfile.ZipFile(file) as archive:
            return set(json.loads(archive.read("data").decode()))
    finally:
        if isinstance(path, (str, pathlib.Path)):
            file.close()
        else:
            file.seek(position)  # BaseAlgorithm.load reads the same file object next


def _is_optimizer_state(state: Any) -> bool:
    """A state dict as torch's optimisers write it: a dict of per-parameter states and a list of groups."""
    return (
        isinstance(state, dict)
        and isinstance(state.get("state"), dict)
        and isinstance(state.get("param_groups"), list)
        and all(isinstance(group, dict) and isinstance(group.get("params"), list) for group in state["param_groups"])
    )


def _cloned(state: Any) -> Any:
    """A copy of a state dict, its tensors cloned (copy.deepcopy's per-object bookkeeping costs more, every update)."""
    if isinstance(state, th.Tensor):
        return state.clone()
    if type(state) in (dict, OrderedDict):
        copied = type(state)((key, _cloned(value)) for key, value in state.items())
        if hasattr(state, "__dict__"):  # a module state dict's _metadata
            copied.__dict__.update(copy.deepcopy(state.__dict__))
        return copied
    if type(state) in (list, tuple):
        return type(state)(_cloned(value) for value in state)
    return copy.deepcopy(state)


class TRPO(OnPolicyAlgorithm):
    """
    Trust Region Policy Optimization (TRPO), with the trust region on the true KL of the action distribution.

    Paper: https://arxiv.org/abs/1502.05477. Each update maximises the surrogate
    L(theta) = E[A pi_theta(a|s) / pi_old(a|s)] subject to mean KL(pi_old || pi_theta) <= target_kl,
    by a natural-gradient step (conjugate gradient on Fisher-vector products) and a backtracking line search.
    The value function is fitted afterwards with its own optimiser over its own parameters only.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy or an ActorCriticPolicy class)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate of the value function's optimiser, it can be a function
        of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel)
    :param batch_size: Minibatch size for the value function
    :param gamma: Discount factor
    :param cg_max_steps: The most conjugate-gradient iterations (Fisher-vector products) per update
    :param cg_damping: Damping lambda: CG solves (F + lambda I) x = g
    :param line_search_shrinking_factor: Step-size reduction factor alpha of the line search
        (candidates are ``theta_old + alpha^j * beta * d``), in (0, 1)
    :param line_search_max_iter: The number of line-search candidates
    :param n_critic_updates: Number of epochs of minibatch updates of the value function per policy update
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
        instead of action noise exploration (default: False)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
        Default: -1 (only sample at the beginning of the rollout)
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param normalize_advantage: Whether to normalize the advantages over each batch
    :param target_kl: The trust-region radius delta: the largest mean KL(pi_old || pi_new) of an update,
        with the KL of the whole action distribution (summed over action dimensions)
    :param sub_sampling_factor: Use every k-th sample of the batch for the Fisher-vector products only
        (the gradient and the line search always use the whole batch);
        see p40-42 of John Schulman's thesis http://joschu.net/docs/thesis.pdf
    :param ent_coef: Entropy bonus coefficient c: the surrogate is L(theta) + c * mean entropy
    :param fvp_method: How to multiply by the Fisher: "analytic" (Gauss-Newton form with the closed-form
        Fisher of the distribution), "autograd" (double backprop, any distribution) or "auto" (analytic
        where it applies, i.e. not for gSDE or custom distributions)
    :param cg_residual_tol: CG stops once ||g - (F + lambda I) x|| <= cg_residual_tol * ||g||
    :param line_search_accept_ratio: A candidate must improve the surrogate by at least this fraction of the
        improvement the linear model expects (0 turns the ratio test off), in [0, 1)
    :param on_nonfinite: What to do with a rollout holding non-finite observations, rewards, values or
        advantages: "raise" a ValueError that says what and where (before anything changes), or "skip" the
        update with a warning, counted in ``train/skipped_updates``
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: the verbosity level: 0 no output, 1 info, 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
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
        target_kl: float = 0.01,
        sub_sampling_factor: int = 1,
        ent_coef: float = 0.0,
        fvp_method: str = "auto",
        cg_residual_tol: float = 1e-5,
        line_search_accept_ratio: float = 0.1,
        on_nonfinite: str = "raise",
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
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=0.0,  # the value function has its own optimiser and loss
            max_grad_norm=0.0,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
        )
        self.batch_size = batch_size
        self.cg_max_steps = cg_max_steps
        self.cg_damping = cg_damping
        self.cg_residual_tol = cg_residual_tol
        self.fvp_method = fvp_method
        self.line_search_shrinking_factor = line_search_shrinking_factor
        self.line_search_max_iter = line_search_max_iter
        self.line_search_accept_ratio = line_search_accept_ratio
        self.n_critic_updates = n_critic_updates
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        self.sub_sampling_factor = sub_sampling_factor
        self.on_nonfinite = on_nonfinite
        self._skipped_policy_steps = 0
        self._skipped_updates = 0
        self._reported_faults: set[str] = set()
        self._validate_hyperparameters()
        self._warn_if_the_last_minibatch_is_short()

        if _init_setup_model:
            self._setup_model()

    def _validate_hyperparameters(self) -> None:
        def require(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")

        def is_real(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        def is_count(value: Any, minimum: int) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value >= minimum)

        require(is_real(self.target_kl) and self.target_kl > 0, "target_kl", "a finite number > 0")
        require(
            is_real(self.line_search_shrinking_factor) and 0 < self.line_search_shrinking_factor < 1,
            "line_search_shrinking_factor",
            "in the open interval (0, 1)",
        )
        require(
            is_real(self.line_search_accept_ratio) and 0 <= self.line_search_accept_ratio < 1,
            "line_search_accept_ratio",
            "in [0, 1)",
        )
        require(is_count(self.line_search_max_iter, 1), "line_search_max_iter", "an integer >= 1")
        require(is_count(self.cg_max_steps, 1), "cg_max_steps", "an integer >= 1")
        require(is_real(self.cg_damping) and self.cg_damping >= 0, "cg_damping", "a finite number >= 0")
        require(is_real(self.cg_residual_tol) and self.cg_residual_tol >= 0, "cg_residual_tol", "a finite number >= 0")
        require(is_count(self.batch_size, 1), "batch_size", "an integer >= 1")
        require(is_count(self.n_steps, 1), "n_steps", "an integer >= 1")
        require(is_count(self.n_critic_updates, 0), "n_critic_updates", "an integer >= 0")
        require(is_count(self.sub_sampling_factor, 1), "sub_sampling_factor", "an integer >= 1")
        require(is_real(self.ent_coef) and self.ent_coef >= 0, "ent_coef", "a finite number >= 0")
        require(self.fvp_method in FVP_METHODS, "fvp_method", f"one of {FVP_METHODS}")
        require(self.on_nonfinite in ON_NONFINITE, "on_nonfinite", f"one of {ON_NONFINITE}")
        if self.env is None:
            return
        rollout_size = self.n_steps * self.env.num_envs
        if self.normalize_advantage and rollout_size < 2:
            raise ValueError(
                "n_steps * n_envs must be >= 2 when normalize_advantage=True (a single advantage has no spread), "
                f"got n_steps={self.n_steps} and n_envs={self.env.num_envs}"
            )
        if self.batch_size > rollout_size:
            raise ValueError(
                f"batch_size must be <= n_steps * n_envs = {rollout_size} (the rollout size), got {self.batch_size}"
            )
        if self.sub_sampling_factor > 1 and math.ceil(rollout_size / self.sub_sampling_factor) < 2:
            raise ValueError(
                f"sub_sampling_factor must leave at least 2 of the n_steps * n_envs = {rollout_size} samples for the "
                f"Fisher-vector products, i.e. be <= {rollout_size - 1}, got {self.sub_sampling_factor}"
            )

    def _warn_if_the_last_minibatch_is_short(self) -> None:
        if self.env is None:
            return
        rollout_size = self.n_steps * self.env.num_envs
        if rollout_size % self.batch_size:
            warnings.warn(
                f"batch_size={self.batch_size} does not divide the rollout size n_steps * n_envs = {rollout_size} "
                f"(n_steps={self.n_steps}, n_envs={self.env.num_envs}): every critic epoch ends with a minibatch of "
                f"{rollout_size % self.batch_size} samples. Choose a batch_size that divides {rollout_size}.",
                UserWarning,
                stacklevel=3,
            )

    def _setup_model(self) -> None:
        if not isinstance(self.action_space, SUPPORTED_ACTION_SPACES):
            raise ValueError(
                f"action space must be one of {[space.__name__ for space in SUPPORTED_ACTION_SPACES]}, got {self.action_space}"
            )
        if not (isinstance(self.policy_class, type) and issubclass(self.policy_class, ActorCriticPolicy)):
            raise ValueError(f"policy must be an ActorCriticPolicy subclass (or an alias of one), got {self.policy_class}")
        super()._setup_model()
        self._actor_params = actor_parameters(self.policy)
        self._critic_params = critic_parameters(self.policy, self._actor_params)
        self._actor_network = actor_network(self.policy, self._actor_params)
        self._critic_network = critic_network(self.policy, self._critic_params)
        if self.fvp_method == "analytic" and not supports_analytic_fisher(self.policy.action_dist):
            raise ValueError(
                f"fvp_method='analytic' has no closed-form Fisher for {type(self.policy.action_dist).__name__}; "
                "use 'auto' or 'autograd'"
            )
        # The critic's optimiser sees the critic's parameters only: the value fit can never move the policy.
        optimizer_kwargs = dict(self.policy.optimizer_kwargs)
        if self.policy.optimizer_class in (th.optim.Adam, th.optim.AdamW) and not {"fused", "foreach"} & set(optimizer_kwargs):
            # One fused kernel per step instead of a dozen small ones: the critic takes hundreds of small steps
            # per update (measured: about a quarter less time in the critic fit).
            optimizer_kwargs["fused"] = True
        self.policy.optimizer = self.policy.optimizer_class(  # type: ignore[call-arg]  # every torch optimiser takes lr
            self._critic_params, lr=self.lr_schedule(1), **optimizer_kwargs
        )

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
        Load a model saved by this TRPO or by sb3-contrib's (see ``BaseAlgorithm.load``). A file that is not
        such a model (corrupted, truncated, another algorithm's) raises a ValueError that says so, and so do
        hyperparameters the constructor would refuse.
        """
        try:
            missing = sorted(SAVED_BY_A_TRPO - saved_attributes(path))
            if missing:
                raise ValueError(f"it was saved by another algorithm (it has no {', '.join(missing)})")
            model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        except (
            AssertionError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            RuntimeError,
            EOFError,
            zipfile.BadZipFile,
            pickle.UnpicklingError,
            json.JSONDecodeError,
        ) as error:
            raise ValueError(
                f"Could not load a TRPO model from {path!r}: {error}. Expected a zip saved by sb3_trpo_ext.TRPO or "
                "sb3_contrib.TRPO (an actor-critic policy with its optimiser)."
            ) from error
        model._validate_hyperparameters()
        return model

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_actor_params",
            "_critic_params",
            "_actor_network",
            "_critic_network",
            "_act",
            "_reported_faults",
        ]

    def set_parameters(
        self,
        load_path_or_dict: str | TensorDict,
        exact_match: bool = True,
        device: th.device | str = "auto",
    ) -> None:
        """
        Load parameters as SB3 does. An optimiser state saved over all the policy's parameters (as
        sb3-contrib's TRPO saves it) is narrowed to the critic's parameters, keeping their Adam moments.
        """
        if isinstance(load_path_or_dict, dict):
            params = dict(load_path_or_dict)
        else:
            _, params, _ = load_from_zip_file(load_path_or_dict, device=device, load_data=False)
        if "policy.optimizer" in params:
            params["policy.optimizer"] = self._critic_optimizer_state(params["policy.optimizer"])
        super().set_parameters(params, exact_match=exact_match, device=device)

    def _critic_optimizer_state(self, state: Any) -> Any:
        all_params = list(self.policy.parameters())
        if not _is_optimizer_state(state) or len(all_params) == len(self._critic_params):
            return state  # SB3 and torch judge (and refuse) anything else as they would for any algorithm
        groups = state["param_groups"]
        if not (len(groups) == 1 and len(groups[0]["params"]) == len(all_params)):
            return state
        position = {id(param): index for index, param in enumerate(all_params)}
        kept = [position[id(param)] for param in self._critic_params]
        return {
            "state": {new: state["state"][old] for new, old in enumerate(kept) if old in state["state"]},
            "param_groups": [{**groups[0], "params": list(range(len(kept)))}],
        }

    def train(self) -> None:
        """One TRPO update from the collected rollout: natural-gradient policy step, then the critic.
        An exception (a KeyboardInterrupt included) undoes the whole update."""
        if not self._rollout_is_finite():
            return
        with self._undone_on_exception():
            self._update()

    def _update(self) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        params = self._actor_params
        batch = next(self.rollout_buffer.get(batch_size=None))
        observations, actions = batch.observations, self._distribution_actions(batch.actions)
        advantages = normalize_advantages(batch.advantages) if self.normalize_advantage else batch.advantages
        theta_old = flat_parameters(params)

        # Surrogate L(theta_old) and the policy gradient g.
        with th.no_grad():
            old_distribution = copy.copy(self.policy.get_distribution(observations))
            old_log_prob = old_distribution.log_prob(actions)
        distribution = self.policy.get_distribution(observations)
        surrogate_before = surrogate_objective(distribution, actions, old_log_prob, advantages, self.ent_coef)
        policy_gradient = flat_grad(surrogate_before, params)
        kl_before = kl_divergence(old_distribution, distribution).mean().item()

        # Natural gradient d = (F + lambda I)^-1 g by conjugate gradient on Fisher-vector products.
        fvp = fisher_vector_product(self.policy, self._subsample(observations), params, self.fvp_method, self.cg_damping)
        cg = conjugate_gradient(fvp, policy_gradient, self.cg_max_steps, self.cg_residual_tol)

        # Step size beta = sqrt(2 delta / d^T (F + lambda I) d), then the backtracking line search.
        def evaluate(step: th.Tensor) -> Candidate:
            set_flat_parameters(params, theta_old + step)
            with th.no_grad():
                candidate = self.policy.get_distribution(observations)
                surrogate = surrogate_objective(candidate, actions, old_log_prob, advantages, self.ent_coef)
                kl = kl_divergence(old_distribution, candidate)
            return Candidate(surrogate.item(), kl.mean().item(), kl.max().item())

        beta = max_step_size(cg.curvature, self.target_kl)
        if beta is None:
            search = LineSearchResult.rejected(theta_old, n_candidates=0)
        else:
            full_step = beta * cg.solution
            search = backtracking_line_search(
                evaluate,
                full_step,
                surrogate_before=surrogate_before.item(),
                expected_improvement=(policy_gradient @ full_step).item(),
                target_kl=self.target_kl,
                shrinking_factor=self.line_search_shrinking_factor,
                max_iter=self.line_search_max_iter,
                accept_ratio=self.line_search_accept_ratio,
            )
        set_flat_parameters(params, theta_old + search.step if search.accepted else theta_old)
        fault = numerical_fault(policy_gradient, beta, search)
        if fault is not None:
            self._skip_policy_step(fault)

        value_loss = self._fit_critic()
        self._n_updates += 1

        accepted = search.candidate
        self.logger.record("train/policy_objective", accepted.surrogate if accepted else surrogate_before.item())
        self.logger.record("train/surrogate_improvement", accepted.surrogate - surrogate_before.item() if accepted else 0.0)
        self.logger.record("train/expected_improvement", (policy_gradient @ search.step).item())
        self.logger.record("train/kl_divergence", accepted.mean_kl if accepted else 0.0)
        self.logger.record("train/max_kl", accepted.max_kl if accepted else 0.0)
        self.logger.record("train/kl_before", kl_before)
        self.logger.record("train/step_size", search.step_fraction * (beta or 0.0))
        self.logger.record("train/line_search_steps", search.n_candidates)
        self.logger.record("train/is_line_search_success", float(search.accepted))
        self.logger.record("train/cg_iterations", cg.iterations)
        self.logger.record("train/cg_residual", cg.residual)
        self.logger.record("train/grad_norm", policy_gradient.norm().item())
        self.logger.record("train/entropy", mean_entropy(old_distribution, old_log_prob).item())
        if value_loss is not None:
            self.logger.record("train/value_loss", value_loss)
        self.logger.record(
            "train/explained_variance",
            explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()),
        )
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/skipped_policy_steps", self._skipped_policy_steps)
        self.logger.record("train/skipped_updates", self._skipped_updates)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def _fit_critic(self) -> float | None:
        """``n_critic_updates`` epochs of minibatch regression of the value on the returns; the mean loss,
        or None when no minibatch was fitted."""
        minibatches = self._critic_minibatches()
        if self._critic_network is None:
            losses = [self._critic_step(observations, returns) for observations, returns in minibatches]
        else:
            steps = optimizer_steps(self.policy.optimizer, self._critic_network.parameters)
            # Inference mode: no autograd bookkeeping on the hundreds of small tensors a fit makes.
            with steps as take_step, th.inference_mode():
                losses = [
                    self._dense_critic_step(cast(th.Tensor, features), returns, take_step) for features, returns in minibatches
                ]
        return th.stack(losses).mean().item() if losses else None

    def _critic_step(self, observations: PyTorchObs, returns: th.Tensor) -> th.Tensor:
        loss = F.mse_loss(returns, self.policy.predict_values(observations))
        self.policy.optimizer.zero_grad()
        # Gradients only where the critic trains: nothing accumulates in (shared) actor parameters.
        loss.backward(inputs=self._critic_params)
        self.policy.optimizer.step()
        return loss.detach()

    def _dense_critic_step(self, features: th.Tensor, returns: th.Tensor, take_step: OptimizerStep) -> th.Tensor:
        """The same step as :meth:`_critic_step` for an MLP critic, its gradient by hand (:mod:`sb3_trpo_ext.dense`)."""
        network = self._critic_network
        assert network is not None
        outputs = network.forward(features)
        residual = outputs[-1] - returns
        # d/dV of mean((V - R)^2) = 2 (V - R) / batch size
        take_step(network.vector_jacobian_product(outputs, residual * (2.0 / returns.shape[0])))
        return residual.square().mean()

    def _critic_minibatches(self) -> Iterator[tuple[PyTorchObs, th.Tensor]]:
        """
        The minibatches ``RolloutBuffer.get(batch_size)`` yields, epoch after epoch, from the same random
        permutations, but cut by index from tensors made once instead of copied out of numpy each time. An MLP
        critic gets its input features rather than the observations: the layers before it do not train here.
        """
        if not self._critic_params:
            return
        buffer = self.rollout_buffer
        # train() has read the whole batch, so the buffer's arrays are already flattened to (n_samples, ...).
        assert buffer.generator_ready
        if isinstance(buffer.observations, dict):
            observations: PyTorchObs = {key: buffer.to_torch(value) for key, value in buffer.observations.items()}
        else:
            observations = buffer.to_torch(buffer.observations)
        if self._critic_network is not None:
            observations = critic_features(self.policy, observations)
        # A column, as the critic's output: (n_samples, 1).
        returns = buffer.to_torch(buffer.returns.reshape(-1, 1))
        n_samples = len(returns)
        for _ in range(self.n_critic_updates):
            # One gather per epoch; its consecutive slices are then the minibatches, without copies.
            order = th.as_tensor(np.random.permutation(n_samples), device=returns.device)
            if isinstance(observations, dict):
                shuffled: PyTorchObs = {key: value[order] for key, value in observations.items()}
            else:
                shuffled = observations[order]
            shuffled_returns = returns[order]
            for start in range(0, n_samples, self.batch_size):
                end = start + self.batch_size
                if isinstance(shuffled, dict):
                    yield {key: value[start:end] for key, value in shuffled.items()}, shuffled_returns[start:end]
                else:
                    yield shuffled[start:end], shuffled_returns[start:end]

    def _skip_policy_step(self, fault: str) -> None:
        self._skipped_policy_steps += 1
        if fault not in self._reported_faults:
            self._reported_faults.add(fault)
            warnings.warn(
                f"TRPO policy step skipped: {fault}; the policy is unchanged. Further skips for this reason are "
                "counted in train/skipped_policy_steps without a warning.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _rollout_is_finite(self) -> bool:
        """Check the rollout before anything changes: raise, or skip the update, as ``on_nonfinite`` says."""
        problem = describe_nonfinite(self.rollout_buffer)
        if problem is None:
            return True
        if self.on_nonfinite == "raise":
            raise ValueError(
                f"The rollout holds {problem}; nothing was updated. Check the environment and its wrappers "
                "(VecNormalize, reward scaling), or pass on_nonfinite='skip' to skip such updates."
            )
        self._skipped_updates += 1
        warnings.warn(f"TRPO update skipped: the rollout holds {problem}.", RuntimeWarning, stacklevel=3)
        self.logger.record("train/skipped_updates", self._skipped_updates)
        return False

    @contextmanager
    def _undone_on_exception(self) -> Iterator[None]:
        """Restore the policy, the critic's optimiser and the update count if the update does not finish."""
        policy_state = _cloned(self.policy.state_dict())
        optimizer_state = _cloned(self.policy.optimizer.state_dict())
        n_updates = self._n_updates
        try:
            yield
        except BaseException:
            self.policy.load_state_dict(policy_state)
            self.policy.optimizer.load_state_dict(optimizer_state)
            self._n_updates = n_updates
            raise

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
        infos), with less work per step. The policy runs in inference mode without torch.distributions' argument
        checks; an observation the policy cannot act on (NaN, infinite) is reported with its place instead.

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
        # An attribute, not a local: callbacks see the loop's locals, which stay SB3's.
        self._act = rollout_policy(self.policy, self._actor_network, self._critic_network)
        callback.on_rollout_start()

        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            self._check_observation_is_finite(rollout_buffer.pos)
            with th.inference_mode():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                actions, values, log_probs = self._act(obs_tensor)
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
                        terminal_value = self.policy.predict_values(terminal_obs)[0]
                    rewards[idx] += self.gamma * terminal_value

            add_to_buffer(
                rollout_buffer,
                self._last_obs,  # type: ignore[arg-type]
                actions,
                rewards,
                self._last_episode_starts,  # type: ignore[arg-type]
                values,
                log_probs,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        with th.inference_mode():
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]
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

    def _distribution_actions(self, actions: th.Tensor) -> th.Tensor:
        if isinstance(self.action_space, spaces.Discrete):
            # The buffer stores actions as floats of shape (n, 1); Categorical wants integer indices.
            return actions.long().flatten()
        return actions

    def _subsample(self, observations: PyTorchObs) -> PyTorchObs:
        k = self.sub_sampling_factor
        if k == 1:
            return observations
        if isinstance(observations, dict):
            return {key: value[::k] for key, value in observations.items()}
        return observations[::k]

    def learn(
        self: SelfTRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "TRPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfTRPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
