"""
The natural-gradient core every algorithm of this package shares (docs/algorithm.md §1-§8): the batch and pi_old,
the policy gradient, Fisher-vector products, conjugate gradient, the step size, the step, the critic, the statistics.

An algorithm is this core with two parts (docs/variants.md): its step rule (``step_rule``: TRPO's line search, NPG's
whole step; :mod:`sb3_trpo_ext.step_rules`) and the kind of policy it holds (``policy_kind``: SB3's policies,
sb3-contrib's maskable or recurrent ones; :mod:`sb3_trpo_ext.kinds`), which builds the policy and its buffer, acts in
the rollout, gives the update its batch and fits the critic.
"""

import copy
import difflib
import inspect
import io
import pathlib
import pickle
import warnings
import zipfile
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.save_util import open_path
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule, TensorDict
from stable_baselines3.common.utils import explained_variance
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo_ext.conjugate_gradient import conjugate_gradient
from sb3_trpo_ext.docstrings import with_every_parameter
from sb3_trpo_ext.extras import unknown_env
from sb3_trpo_ext.fast_paths import FastPaths
from sb3_trpo_ext.fisher import flat_grad, kl_divergence, supports_analytic_fisher
from sb3_trpo_ext.hyperparameters import (
    HyperparameterError,
    as_schedule,
    target_kl_at,
    validate_hyperparameters,
    warn_if_the_last_minibatch_is_short,
)
from sb3_trpo_ext.kinds import PolicyKind
from sb3_trpo_ext.line_search import Candidate
from sb3_trpo_ext.policies import actor_parameters, critic_parameters, flat_parameters, set_flat_parameters
from sb3_trpo_ext.rollout_checks import describe_nonfinite, nonfinite_rollout_error
from sb3_trpo_ext.rollout_loop import RolloutLoop
from sb3_trpo_ext.safe_loading.allowlist import UnsafeFileError, known_classes
from sb3_trpo_ext.safe_loading.archive import check_tensors, file_name, read_archive, with_plain_descriptions
from sb3_trpo_ext.safe_loading.limits import LoadBudget, LoadLimitError
from sb3_trpo_ext.safe_loading.models import check_declared_sizes, safe_custom_objects
from sb3_trpo_ext.safe_loading.saving import (
    LOAD_ERRORS,
    load_error_reason,
    refuse_foreign,
    saved_by_sb3_contrib,
    with_critic_optimizer_state,
)
from sb3_trpo_ext.step_rules import STEP_RULES, LineSearch, StepRule
from sb3_trpo_ext.surrogate import mean_entropy, normalize_advantages, surrogate_objective
from sb3_trpo_ext.update import (
    PolicyBatch,
    ProposedStep,
    UpdateStatistics,
    distribution_actions,
    max_step_size,
    numerical_fault,
    undone_on_exception,
)

SelfNaturalGradient = TypeVar("SelfNaturalGradient", bound="NaturalGradientAlgorithm")

SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def _subclasses(cls: type) -> list[Any]:
    direct: list[Any] = cls.__subclasses__()
    return [sub for each in direct for sub in (each, *_subclasses(each))]


def _taken_by(takes: Any) -> str:
    """
    "TRPO takes it" / "NPG, TRPO take it": the algorithms of this package (those with a step rule) for which
    ``takes(algorithm)`` holds, for an error message; "" if none.
    """
    takers = sorted(
        {cls.__name__ for cls in _subclasses(NaturalGradientAlgorithm) if type(cls.step_rule) is not StepRule and takes(cls)}
    )
    return f"{', '.join(takers)} {'takes' if len(takers) == 1 else 'take'} it" if takers else ""


class NaturalGradientAlgorithm(RolloutLoop):
    """
    The base of the natural-gradient algorithms (:class:`~sb3_trpo_ext.TRPO`, :class:`~sb3_trpo_ext.NPG`, their
    maskable variants): each update takes a step beta * d along the natural gradient d = (F + lambda I)^-1 g, with
    beta = sqrt(2 delta / d^T (F + lambda I) d) so that the quadratic model of the mean KL(pi_old || pi_new) is
    target_kl, then fits the value function with its own optimiser over its own parameters only. The update step by
    step: docs/algorithm.md.

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
    :param n_critic_updates: Number of epochs of minibatch updates of the value function per policy update
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
        instead of action noise exploration (default: False)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
        Default: -1 (only sample at the beginning of the rollout)
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param normalize_advantage: Whether to normalize the advantages over each batch
    :param target_kl: The trust-region radius delta: the mean KL(pi_old || pi_new) the step is sized for,
        with the KL of the whole action distribution (summed over action dimensions); it can be a function of the
        current progress remaining (from 1 to 0), like ``learning_rate``, whose value may fall to 0 (no step)
    :param sub_sampling_factor: Use every k-th sample of the batch for the Fisher-vector products only
        (the gradient and the step always use the whole batch);
        see p40-42 of John Schulman's thesis http://joschu.net/docs/thesis.pdf
    :param ent_coef: Entropy bonus coefficient c: the surrogate is L(theta) + c * mean entropy
    :param fvp_method: How to multiply by the Fisher: "analytic" (Gauss-Newton form with the closed-form
        Fisher of the distribution), "autograd" (double backprop, any distribution) or "auto" (analytic
        where it applies, i.e. not for gSDE or custom distributions)
    :param cg_residual_tol: CG stops once ||g - (F + lambda I) x|| <= cg_residual_tol * ||g||
    :param on_nonfinite: What to do with a rollout holding non-finite observations, rewards, values or
        advantages: "raise" a ValueError that says what and where (before anything changes), or "skip" the
        update with a warning, counted in ``train/skipped_updates``
    :param fast_paths: Take the fast paths (layer-by-layer MLP products and critic steps, the rollout's direct
        buffer writes, fused critic steps; see ``sb3_trpo_ext.fast_paths``); False makes every computation go
        through SB3's and torch's public API, for the same update
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

    #: The kind of policy the algorithm holds (one instance per model, ``_kind``): SB3's actor-critic policies here.
    policy_kind: ClassVar[type[PolicyKind]] = PolicyKind
    #: How much of the natural-gradient step the algorithm takes (docs/algorithm.md §6); each algorithm names its own.
    step_rule: ClassVar[StepRule] = StepRule()
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = PolicyKind.aliases
    #: Hyperparameters every algorithm's zip holds (a zip of this one also holds its step rule's ``saved``).
    saved_hyperparameters: ClassVar[frozenset[str]] = frozenset(
        {"target_kl", "cg_max_steps", "cg_damping", "n_critic_updates", "sub_sampling_factor"}
    )
    _kind: PolicyKind

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """The class's policy names are its kind's; two kinds of policy in one class are refused by name. Its
        docstring documents every parameter, each written once (:func:`~sb3_trpo_ext.docstrings.with_every_parameter`)."""
        super().__init_subclass__(**kwargs)
        with_every_parameter(cls)
        kinds = {vars(base)["policy_kind"] for base in cls.__mro__ if "policy_kind" in vars(base)} - {PolicyKind}
        if len(kinds) > 1:
            names = sorted(kind.__name__ for kind in kinds)
            raise TypeError(f"{cls.__name__} combines the policy kinds {names}; a policy is of one kind")
        cls.policy_aliases = cls.policy_kind.aliases

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """Refuse, in one line, a keyword the constructor does not take, naming the algorithms that take it."""
        accepted = inspect.signature(cls.__init__).parameters
        unknown = [name for name in kwargs if name not in accepted]
        if unknown:
            name = unknown[0]
            takers = _taken_by(lambda algorithm: name in inspect.signature(algorithm.__init__).parameters)
            close = difflib.get_close_matches(name, list(accepted), n=1)
            hint = f"; {takers}" if takers else ""
            hint += f" (did you mean {close[0]!r}?)" if close and not takers else ""
            raise TypeError(f"{cls.__name__} does not take {name!r}{hint}")
        return super().__new__(cls)

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
        problem = unknown_env(env) if isinstance(env, str) else None
        if problem is not None:
            raise ValueError(f"env: {problem}")
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
        self.n_critic_updates = n_critic_updates
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        self.sub_sampling_factor = sub_sampling_factor
        self.on_nonfinite = on_nonfinite
        self.fast_paths = fast_paths
        self._skipped_policy_steps = 0
        self._skipped_updates = 0
        self._reported_faults: set[str] = set()
        self._kind = self.policy_kind()
        # A subclass with hyperparameters of its own passes False and sets up after setting them, as SB3's PPO does.
        if _init_setup_model:
            self._setup_model()
            warn_if_the_last_minibatch_is_short(self)

    def _get_policy_from_name(self, policy_name: str) -> type[BasePolicy]:
        """The policy an alias names for this algorithm; another name is refused naming this algorithm's aliases, and
        the algorithm of this package that takes it where there is one (``MlpLstmPolicy``: RecurrentTRPO)."""
        if policy_name in self.policy_aliases:
            return self.policy_aliases[policy_name]
        takers = _taken_by(lambda algorithm: policy_name in algorithm.policy_aliases)
        hint = f" ({takers})" if takers else ""
        raise HyperparameterError(
            f"policy {policy_name!r} is not one {type(self).__name__} takes: {sorted(self.policy_aliases)}, or an "
            f"ActorCriticPolicy class of its kind{hint}"
        )

    def _validate_hyperparameters(self) -> None:
        """Raise a HyperparameterError naming the first hyperparameter outside its allowed values: the core's, the
        step rule's, the kind's. A model is checked so whenever it is set up: made or loaded."""
        validate_hyperparameters(self)
        self.step_rule.validate(self)
        self._kind.validate(self)

    def _setup_model(self) -> None:
        """Check every hyperparameter, then build the policy and its buffer (as the kind says), find the actor's and
        the critic's parameters, decide the fast paths and give the critic its own optimiser."""
        self._validate_hyperparameters()
        self._setup_schedules()
        if not isinstance(self.action_space, SUPPORTED_ACTION_SPACES):
            raise HyperparameterError(
                f"action space must be one of {[space.__name__ for space in SUPPORTED_ACTION_SPACES]}, got {self.action_space}"
            )
        self._kind.build(self)
        self._actor_params = actor_parameters(self.policy)
        self._critic_params = critic_parameters(self.policy, self._actor_params)
        # Decided here, once: FastPaths hands out every part that differs with them.
        self._speedups = FastPaths.of(self.policy, self._actor_params, self._critic_params, self.fast_paths)
        if self.fvp_method == "analytic" and not supports_analytic_fisher(self.policy.action_dist):
            raise HyperparameterError(
                f"fvp_method='analytic' has no closed-form Fisher for {type(self.policy.action_dist).__name__}; "
                "use 'auto' or 'autograd'"
            )
        # The critic's optimiser sees the critic's parameters only: the value fit can never move the policy.
        self.policy.optimizer = self._speedups.critic_optimizer(self.policy, self._critic_params, self.lr_schedule(1))

    def _setup_schedules(self) -> None:
        """``target_kl`` as a schedule, once (SB3's PPO so wraps ``clip_range``); the attribute keeps the value given,
        which a zip saves as it is."""
        self._target_kl_schedule = as_schedule(self.target_kl)

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        Save as SB3 does; beside each entry SB3 pickles, the zip also holds a plain description of it, from which
        ``load`` rebuilds it without unpickling anything (docs/security.md). A part that has none (a class of your
        own in ``policy_kwargs``, a function as a schedule) is named in a warning: loading restores it only from
        ``custom_objects`` or with ``trust_pickle=True``.
        """
        written = io.BytesIO()
        super().save(written, exclude, include)
        archive, missing = with_plain_descriptions(written.getvalue(), self, known_classes(self.policy_aliases.values()))
        if missing:
            warnings.warn(
                f"{type(self).__name__}.save: {'; '.join(missing)} has no plain form: load(...) restores it only from "
                "custom_objects, or with trust_pickle=True (which runs the file's code)",
                stacklevel=2,
            )
        file = open_path(path, "w", verbose=0, suffix="zip")
        try:
            file.write(archive)
        finally:
            if isinstance(path, (str, pathlib.Path)):
                file.close()

    @classmethod
    def load(
        cls: type[SelfNaturalGradient],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        trust_pickle: bool = False,
        **kwargs: Any,
    ) -> SelfNaturalGradient:
        """
        Load a model saved by this algorithm (see ``BaseAlgorithm.load``); an algorithm with SB3's policies and a
        line search (TRPO) also loads sb3-contrib's TRPO zips, taking the step they took there
        (:meth:`~sb3_trpo_ext.step_rules.LineSearch.take_sb3_contrib_settings`). A file that is not such a model
        (corrupted, truncated, another algorithm's) raises a ValueError that says so, and so do hyperparameters the
        constructor would refuse.

        :param trust_pickle: unpickle the entries SB3 pickles, as SB3's own ``load`` does. Unpickling runs whatever
            code the file carries: only for a file you trust. By default nothing is unpickled: each such entry is
            rebuilt from its plain description (:mod:`sb3_trpo_ext.safe_loading`), or taken from ``custom_objects``,
            and an entry that can be neither raises an :class:`~sb3_trpo_ext.safe_loading.UnsafeFileError` naming
            it. Its tensors are read only once torch's ``weights_only`` loader has accepted them, a file naming an
            environment (which SB3 never saves) is refused, and all it makes the load allocate is sized first against
            ``SB3_TRPO_EXT_MAX_LOAD_BYTES`` (1 GiB unless set).
        """
        loads_sb3_contrib = cls.policy_kind is PolicyKind and isinstance(cls.step_rule, LineSearch)
        try:
            budget = LoadBudget()
            data, sizes = read_archive(path, budget)
            refuse_foreign(set(data), cls.saved_hyperparameters | cls.step_rule.saved, cls._foreign_hyperparameters())
            from_sb3_contrib = loads_sb3_contrib and saved_by_sb3_contrib(set(data))
            if not trust_pickle:
                check_tensors(path, measured=True)
                classes = known_classes(cls.policy_aliases.values())
                custom_objects = safe_custom_objects(data, classes, custom_objects, budget)
                overrides = {**kwargs, **({"n_envs": env.num_envs} if isinstance(env, VecEnv) else {})}
                check_declared_sizes(data, custom_objects, sizes, overrides, budget, cls.policy_kind.buffer_classes)
            model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        except HyperparameterError:
            raise  # said as the constructor says it
        except (UnsafeFileError, LoadLimitError) as error:
            raise type(error)(f"{file_name(path)}: {error}") from None  # the file, the entry and the way out
        except LOAD_ERRORS as error:
            saved_by = f"sb3_trpo_ext.{cls.__name__}" + (" or sb3_contrib.TRPO" if loads_sb3_contrib else "")
            raise ValueError(
                f"Could not load a {cls.__name__} model from {path!r}: {load_error_reason(error)}. Expected a zip "
                f"saved by {saved_by} (an actor-critic policy with its optimiser)."
            ) from error
        if from_sb3_contrib:
            LineSearch.take_sb3_contrib_settings(model, given=set(kwargs))
        return model

    @classmethod
    def _foreign_hyperparameters(cls) -> frozenset[str]:
        """The hyperparameters of the other step rules, which a zip of this algorithm never holds."""
        return frozenset().union(*(rule.hyperparameters for rule in STEP_RULES)) - cls.step_rule.hyperparameters

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_actor_params", "_critic_params", "_speedups", "_rollout_acting",
                "_step_inputs", "_reported_faults", "_kind", "_target_kl_schedule"]  # fmt: skip

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
        try:
            if not isinstance(load_path_or_dict, dict):
                check_tensors(load_path_or_dict)
            params = with_critic_optimizer_state(
                load_path_or_dict, device, list(self.policy.parameters()), self._critic_params
            )
        except (pickle.UnpicklingError, zipfile.BadZipFile) as error:
            raise ValueError(f"Could not load parameters from {load_path_or_dict!r}: {load_error_reason(error)}") from error
        super().set_parameters(params, exact_match=exact_match, device=device)

    def learn(
        self: SelfNaturalGradient,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfNaturalGradient:
        """As SB3's ``learn``; ``tb_log_name`` defaults to the class name (``TRPO``, ``NPG``, ``RecurrentTRPO``...)."""
        name = tb_log_name or type(self).__name__
        return super().learn(total_timesteps, callback, log_interval, name, reset_num_timesteps, progress_bar)

    def train(self) -> None:
        """One update from the collected rollout: natural-gradient policy step, then the critic.
        An exception (a KeyboardInterrupt included) undoes the whole update."""
        if not self._rollout_is_finite():
            return
        with undone_on_exception(self):
            statistics = self._update()
        statistics.record(self.logger)
        # Counts of faults, each also warned of once: not in the console's table.
        self.logger.record("train/skipped_policy_steps", self._skipped_policy_steps, exclude="stdout")
        self.logger.record("train/skipped_updates", self._skipped_updates, exclude="stdout")
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def _update(self) -> UpdateStatistics:
        """The algorithm box: docs/algorithm.md §1-§7."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        batch, params = self._policy_batch(), self._actor_params
        theta_old = flat_parameters(params)

        # §1: the surrogate L(theta_old) and the policy gradient g.
        distribution = batch.inputs.distribution(self.policy)
        surrogate_before = self._surrogate(distribution, batch)
        policy_gradient = flat_grad(surrogate_before, params)
        kl_before = kl_divergence(batch.old_distribution, distribution).mean().item()

        # §3-§4: the natural gradient d = (F + lambda I)^-1 g by conjugate gradient on Fisher-vector products.
        inputs = batch.inputs.every(self.sub_sampling_factor)
        fvp = self._speedups.fisher_vector_product(self.policy, inputs, params, self.fvp_method, self.cg_damping)
        cg = conjugate_gradient(fvp, policy_gradient, self.cg_max_steps, self.cg_residual_tol)

        # §5-§6: the step size beta = sqrt(2 delta / d^T (F + lambda I) d), then the step rule (TRPO: a line search).
        delta = target_kl_at(self._target_kl_schedule, self._current_progress_remaining)
        beta = max_step_size(cg.curvature, delta)
        if beta is None:
            search = self.step_rule.nothing_to_take(theta_old)
        else:
            full_step = beta * cg.solution
            proposed = ProposedStep(full_step, (policy_gradient @ full_step).item(), surrogate_before.item(), delta)
            search = self.step_rule.take(self, proposed, lambda step: self._candidate(batch, theta_old, step))
        set_flat_parameters(params, theta_old + search.step if search.accepted else theta_old)
        fault = numerical_fault(policy_gradient, beta, search)
        if fault is not None:
            self._skip_policy_step(fault)

        # §7: the critic.
        value_loss = self._fit_critic()
        self._n_updates += 1

        accepted = search.candidate
        return UpdateStatistics(
            policy_objective=accepted.surrogate if accepted else surrogate_before.item(),
            surrogate_improvement=accepted.surrogate - surrogate_before.item() if accepted else 0.0,
            expected_improvement=(policy_gradient @ search.step).item(),
            kl_divergence=accepted.mean_kl if accepted else 0.0,
            max_kl=accepted.max_kl if accepted else 0.0,
            kl_before=kl_before,
            target_kl=delta,
            step_size=search.fraction * (beta or 0.0),
            line_search_steps=search.line_search_steps,
            is_line_search_success=None if search.line_search_steps is None else float(search.accepted),
            cg_iterations=cg.iterations,
            cg_residual=cg.residual,
            grad_norm=policy_gradient.norm().item(),
            entropy=mean_entropy(batch.old_distribution, batch.old_log_prob).item(),
            value_loss=value_loss,
            explained_variance=explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()),
            std=th.exp(self.policy.log_std).mean().item() if hasattr(self.policy, "log_std") else None,
        )

    def _fit_critic(self) -> float | None:
        """The critic's fit on the rollout, as the kind of policy fits it; the mean minibatch loss, or None."""
        return self._kind.fit_critic(
            self.policy, self._critic_params, self.rollout_buffer, self.n_critic_updates, self.batch_size, self._speedups
        )

    def _policy_batch(self) -> PolicyBatch:
        """The whole rollout as one batch, with pi_old evaluated on it."""
        inputs, actions, advantages = self._kind.batch(self.rollout_buffer)
        actions = distribution_actions(actions, self.action_space)
        advantages = normalize_advantages(advantages) if self.normalize_advantage else advantages
        with th.no_grad():
            old_distribution = copy.copy(inputs.distribution(self.policy))
            old_log_prob = old_distribution.log_prob(actions)
        return PolicyBatch(inputs, actions, advantages, old_distribution, old_log_prob)

    def _surrogate(self, distribution: Distribution, batch: PolicyBatch) -> th.Tensor:
        return surrogate_objective(distribution, batch.actions, batch.old_log_prob, batch.advantages, self.ent_coef)

    def _candidate(self, batch: PolicyBatch, theta_old: th.Tensor, step: th.Tensor) -> Candidate:
        """The policy at theta_old + step, judged on the exact surrogate and KL (docs/algorithm.md §6); it stays there."""
        set_flat_parameters(self._actor_params, theta_old + step)
        with th.no_grad():
            candidate = batch.inputs.distribution(self.policy)
            surrogate = self._surrogate(candidate, batch)
            kl = kl_divergence(batch.old_distribution, candidate)
        return Candidate(surrogate.item(), kl.mean().item(), kl.max().item())

    def _skip_policy_step(self, fault: str) -> None:
        self._skipped_policy_steps += 1
        if fault not in self._reported_faults:
            self._reported_faults.add(fault)
            warnings.warn(
                f"{type(self).__name__} policy step skipped: {fault}; the policy is unchanged. Further skips for this "
                "reason are counted in train/skipped_policy_steps without a warning.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _rollout_is_finite(self) -> bool:
        """Check the rollout before anything changes: raise, or skip the update, as ``on_nonfinite`` says."""
        problem = describe_nonfinite(self.rollout_buffer)
        if problem is None:
            return True
        if self.on_nonfinite == "raise":
            raise nonfinite_rollout_error(problem)
        self._skipped_updates += 1
        warnings.warn(f"{type(self).__name__} update skipped: the rollout holds {problem}.", RuntimeWarning, stacklevel=3)
        self.logger.record("train/skipped_updates", self._skipped_updates, exclude="stdout")
        return False
