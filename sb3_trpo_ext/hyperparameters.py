"""The checks every hyperparameter passes, in the constructor and after a load: a :class:`HyperparameterError` naming it."""

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from sb3_trpo_ext.fisher import FVP_METHODS

ON_NONFINITE = ("raise", "skip")


class HyperparameterError(ValueError):
    """A hyperparameter, or a combination of them with the environment, that the algorithm does not take; the message
    names it and what is allowed (command lines print it as one line)."""


def is_finite_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_count(value: Any, minimum: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value >= minimum)


def requirement(algorithm: Any) -> Callable[[bool, str, str], None]:
    """``require(ok, name, allowed)``: raise a HyperparameterError naming ``algorithm``'s ``name``, its value and what is
    allowed, unless ``ok``."""

    def require(ok: bool, name: str, allowed: str) -> None:
        if not ok:
            raise HyperparameterError(f"{name} must be {allowed}, got {getattr(algorithm, name)!r}")

    return require


def as_schedule(value: float | Callable[[float], float]) -> Callable[[float], float]:
    """``value`` as SB3 wraps a hyperparameter that may be a schedule: its ``FloatSchedule`` (SB3 2.7+), else
    ``get_schedule_fn``."""
    try:
        from stable_baselines3.common.utils import FloatSchedule
    except ImportError:  # SB3 before 2.7
        from stable_baselines3.common.utils import get_schedule_fn

        return get_schedule_fn(value)
    return FloatSchedule(value)


def target_kl_at(schedule: Callable[[float], float], progress_remaining: float) -> float:
    """
    delta for the update at ``progress_remaining``: the value of ``target_kl``'s schedule (:func:`as_schedule`) there,
    which must be a finite number >= 0 (0: no step).
    """
    # The last rollout of learn() may overshoot total_timesteps, leaving the progress remaining below 0: a schedule
    # is read on [0, 1] only, so that one going linearly to 0 (rl_zoo3's "lin_") ends at 0, not below.
    progress_remaining = min(max(progress_remaining, 0.0), 1.0)
    try:
        delta = schedule(progress_remaining)
    except (TypeError, ValueError) as error:  # FloatSchedule's float() of what the schedule gave
        raise HyperparameterError(f"target_kl's schedule must give a finite number >= 0: {error}") from None
    if not (is_finite_real(delta) and delta >= 0):
        raise HyperparameterError(
            f"target_kl's schedule must give a finite number >= 0, got {delta!r} at progress remaining {progress_remaining}"
        )
    return float(delta)


def validate_hyperparameters(algorithm: Any) -> None:
    """
    Raise a HyperparameterError naming the first hyperparameter of ``algorithm`` (a natural-gradient algorithm) outside its
    allowed values, or a combination that cannot work with its environment.
    """
    require, a = requirement(algorithm), algorithm
    # A schedule that starts at 0 would never step; later values are checked as they are used (target_kl_at).
    require(
        target_kl_at(as_schedule(a.target_kl), 1.0) > 0
        if callable(a.target_kl)
        else is_finite_real(a.target_kl) and a.target_kl > 0,
        "target_kl",
        "a finite number > 0, or a schedule (a function of the progress remaining) whose first value is one",
    )
    require(is_count(a.cg_max_steps, 1), "cg_max_steps", "an integer >= 1")
    require(is_finite_real(a.cg_damping) and a.cg_damping >= 0, "cg_damping", "a finite number >= 0")
    require(is_finite_real(a.cg_residual_tol) and a.cg_residual_tol >= 0, "cg_residual_tol", "a finite number >= 0")
    require(is_finite_real(a.gamma) and 0 <= a.gamma <= 1, "gamma", "a number in [0, 1]")
    require(is_finite_real(a.gae_lambda) and 0 <= a.gae_lambda <= 1, "gae_lambda", "a number in [0, 1]")
    require(is_count(a.sde_sample_freq, -(2**63)), "sde_sample_freq", "an integer (-1: once a rollout)")
    require(is_count(a.batch_size, 1), "batch_size", "an integer >= 1")
    require(is_count(a.n_steps, 1), "n_steps", "an integer >= 1")
    require(is_count(a.n_critic_updates, 0), "n_critic_updates", "an integer >= 0")
    require(is_count(a.sub_sampling_factor, 1), "sub_sampling_factor", "an integer >= 1")
    require(is_finite_real(a.ent_coef) and a.ent_coef >= 0, "ent_coef", "a finite number >= 0")
    require(a.fvp_method in FVP_METHODS, "fvp_method", f"one of {FVP_METHODS}")
    require(a.on_nonfinite in ON_NONFINITE, "on_nonfinite", f"one of {ON_NONFINITE}")
    require(isinstance(a.fast_paths, bool), "fast_paths", "True or False")
    if a.env is None:
        return
    rollout_size = a.n_steps * a.env.num_envs
    if a.normalize_advantage and rollout_size < 2:
        raise HyperparameterError(
            "n_steps * n_envs must be >= 2 when normalize_advantage=True (a single advantage has no spread), "
            f"got n_steps={a.n_steps} and n_envs={a.env.num_envs}"
        )
    if a.batch_size > rollout_size:
        raise HyperparameterError(
            f"batch_size must be <= n_steps * n_envs = {rollout_size} (the rollout size), got {a.batch_size}"
        )
    if a.sub_sampling_factor > 1 and math.ceil(rollout_size / a.sub_sampling_factor) < 2:
        raise HyperparameterError(
            f"sub_sampling_factor must leave at least 2 of the n_steps * n_envs = {rollout_size} samples for the "
            f"Fisher-vector products, i.e. be <= {rollout_size - 1}, got {a.sub_sampling_factor}"
        )


def warn_if_the_last_minibatch_is_short(algorithm: Any) -> None:
    """SB3's warning when ``batch_size`` does not divide the rollout: every critic epoch ends with a short minibatch."""
    if algorithm.env is None:
        return
    rollout_size = algorithm.n_steps * algorithm.env.num_envs
    if rollout_size % algorithm.batch_size:
        warnings.warn(
            f"batch_size={algorithm.batch_size} does not divide the rollout size n_steps * n_envs = {rollout_size} "
            f"(n_steps={algorithm.n_steps}, n_envs={algorithm.env.num_envs}): every critic epoch ends with a minibatch "
            f"of {rollout_size % algorithm.batch_size} samples. Choose a batch_size that divides {rollout_size}.",
            UserWarning,
            stacklevel=3,
        )
