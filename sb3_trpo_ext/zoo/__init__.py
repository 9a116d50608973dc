"""
rl-zoo integration: this package's algorithms as zoo algorithms (``trpo_ext``, ``npg_ext``, ``maskable_trpo_ext``),
with their Optuna samplers and packaged hyperparameters (``ALGO.yml``, shipped inside the package).

Users who drive rl_zoo3 themselves call :func:`register` first; ``python -m sb3_trpo_ext.zoo`` (or the
``sb3-trpo-ext`` command) does it for them.
"""

import inspect
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from sb3_trpo_ext.extras import require
from sb3_trpo_ext.hyperparameters import HyperparameterError
from sb3_trpo_ext.maskable import MaskableTRPO
from sb3_trpo_ext.natural_gradient import NaturalGradientAlgorithm
from sb3_trpo_ext.npg import NPG
from sb3_trpo_ext.recurrent import RecurrentTRPO
from sb3_trpo_ext.trpo import TRPO

#: The zoo algorithm the command line takes when no ``--algo`` is given.
ALGO = "trpo_ext"

#: This package's algorithms by their zoo names.
ALGORITHMS: dict[str, type[NaturalGradientAlgorithm]] = {
    "trpo_ext": TRPO,
    "npg_ext": NPG,
    "maskable_trpo_ext": MaskableTRPO,
    "recurrent_trpo_ext": RecurrentTRPO,
}

#: Keys of a zoo entry that rl_zoo3 consumes itself rather than passing to the algorithm.
ZOO_KEYS = frozenset(
    {
        "n_envs",
        "n_timesteps",
        "normalize",
        "normalize_kwargs",
        "frame_stack",
        "env_wrapper",
        "vec_env_wrapper",
        "callback",
        "env_kwargs",
        "monitor_kwargs",
    }
)


def config_path(algo: str = ALGO) -> Path:
    """The packaged hyperparameter file of a zoo algorithm of this package (rl_zoo3's YAML format)."""
    return Path(str(resources.files(__package__).joinpath(f"{algo}.yml")))


def accepted_hyperparameters(algo: str = ALGO) -> set[str]:
    """The keys a zoo entry may have: the algorithm's constructor arguments and the keys rl_zoo3 consumes."""
    return (set(inspect.signature(ALGORITHMS[algo].__init__).parameters) - {"self", "env"}) | ZOO_KEYS


def unknown_hyperparameters(entry: dict[str, Any], algo: str = ALGO) -> list[str]:
    """The keys of a zoo entry that neither the algorithm's constructor nor rl_zoo3 accepts (typos, other algorithms')."""
    accepted = accepted_hyperparameters(algo)
    return sorted(key for key in entry if key not in accepted)


def convert_trpo_ext_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's raw trial parameters -> the algorithm's hyperparameters (also used to reload a trial from a storage)."""
    from rl_zoo3.hyperparams_opt import convert_onpolicy_params

    params = dict(sampled_params)
    # batch_size = n_steps / 2^k never exceeds the rollout, whatever the number of envs
    params["batch_size_pow"] = params["n_steps_pow"] - params.pop("minibatches_pow")
    policy_extras = {key: params.pop(key) for key in ("log_std_init", "ortho_init") if key in params}
    converted = convert_onpolicy_params(params)
    converted["policy_kwargs"].update(policy_extras)
    return converted


def sample_trpo_ext_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Optuna sampler over what decides returns: samples per update (``n_steps``; ``n_envs`` is the entry's), the
    networks (``net_arch``, activation, ``log_std_init``, ``ortho_init``), ``gamma`` and ``gae_lambda``, the
    critic (learning rate, epochs, minibatch size) and the natural-gradient step (``target_kl`` on the true-KL scale,
    ``cg_damping``, CG iterations, line search, Fisher sub-sampling).

    The damping reaches 2: sb3-contrib's default 0.1 on a 6- to 8-dimensional action space is 0.6 to 0.8 here
    (docs/algorithm.md §9).
    """
    return _sample_natural_gradient_params(trial, n_envs, line_search=True, log_std=True)


def sample_recurrent_trpo_ext_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """The search space of :func:`sample_trpo_ext_params` without Fisher sub-sampling, which needs several
    environments' sequences."""
    return _sample_natural_gradient_params(trial, n_envs, line_search=True, log_std=True, sub_sampling=False)


def sample_maskable_trpo_ext_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """The search space of :func:`sample_trpo_ext_params` without ``log_std_init``: masked actions are discrete."""
    return _sample_natural_gradient_params(trial, n_envs, line_search=True, log_std=False)


def sample_npg_ext_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """The search space of :func:`sample_trpo_ext_params` without the line search, which NPG does not have."""
    return _sample_natural_gradient_params(trial, n_envs, line_search=False, log_std=True)


SAMPLERS = {
    "trpo_ext": sample_trpo_ext_params,
    "npg_ext": sample_npg_ext_params,
    "maskable_trpo_ext": sample_maskable_trpo_ext_params,
    "recurrent_trpo_ext": sample_recurrent_trpo_ext_params,
}


def _sample_natural_gradient_params(
    trial: Any, n_envs: int, line_search: bool, log_std: bool, sub_sampling: bool = True
) -> dict[str, Any]:
    sampled = {
        "n_steps_pow": trial.suggest_int("n_steps_pow", 8, 12),
        "minibatches_pow": trial.suggest_int("minibatches_pow", 0, 4),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True),
        "one_minus_gae_lambda": trial.suggest_float("one_minus_gae_lambda", 0.001, 0.1, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        "n_critic_updates": trial.suggest_int("n_critic_updates", 5, 30),
        "cg_max_steps": trial.suggest_int("cg_max_steps", 5, 30),
        "cg_damping": trial.suggest_float("cg_damping", 1e-3, 2.0, log=True),
        "target_kl": trial.suggest_float("target_kl", 1e-3, 0.3, log=True),
    }
    if line_search:  # drawn here, in the order of the studies made before NPG had its own sampler
        sampled["line_search_shrinking_factor"] = trial.suggest_categorical(
            "line_search_shrinking_factor", [0.6, 0.7, 0.8, 0.9]
        )
        sampled["line_search_accept_ratio"] = trial.suggest_categorical("line_search_accept_ratio", [0.0, 0.1, 0.2])
    if sub_sampling:
        sampled["sub_sampling_factor"] = trial.suggest_categorical("sub_sampling_factor", [1, 2, 4])
    sampled |= {
        "net_arch": trial.suggest_categorical("net_arch", ["small", "medium"]),
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
    }
    if log_std:
        sampled["log_std_init"] = trial.suggest_float("log_std_init", -2.0, 0.5)
    sampled["ortho_init"] = trial.suggest_categorical("ortho_init", [True, False])
    trial.set_user_attr("n_steps", 2 ** sampled["n_steps_pow"])
    trial.set_user_attr("batch_size", 2 ** (sampled["n_steps_pow"] - sampled["minibatches_pow"]))
    trial.set_user_attr("samples_per_update", 2 ** sampled["n_steps_pow"] * n_envs)
    return convert_trpo_ext_params(sampled)


def linear_schedule_start(text: str, key: str, where: str) -> float:
    """
    The initial value of rl_zoo3's schedule ``"lin_<initial>"``.

    :param key: the hyperparameter it is the value of, and ``where`` the entry, for the error message
    :raises HyperparameterError: for any other text
    """
    kind, _, initial = text.partition("_")
    try:
        start = float(initial) if kind == "lin" else None
    except ValueError:
        start = None
    if start is None:
        raise HyperparameterError(f"{key} schedule {text!r} in {where}: only 'lin_<initial value>' is known")
    return start


def linear_schedule(text: str, key: str, where: str) -> Callable[[float], float]:
    """
    rl_zoo3's schedule ``"lin_<initial>"``: from ``initial`` at the start of ``learn`` linearly to 0 at its end.

    :param key: the hyperparameter it is the value of, and ``where`` the entry, for the error message
    """
    start = linear_schedule_start(text, key, where)
    try:
        from stable_baselines3.common.utils import LinearSchedule
    except ImportError:  # stable-baselines3 < 2.6 has the function form only
        from stable_baselines3.common.utils import get_linear_fn

        return get_linear_fn(start, 0.0, 1.0)
    return LinearSchedule(start, 0.0, 1.0)


def _preprocess_schedules_with_target_kl(hyperparams: dict[str, Any]) -> dict[str, Any]:
    hyperparams = _RL_ZOO3_PREPROCESS_SCHEDULES(hyperparams)
    if isinstance(hyperparams.get("target_kl"), str):
        hyperparams["target_kl"] = linear_schedule(hyperparams["target_kl"], "target_kl", "the zoo entry")
    return hyperparams


_RL_ZOO3_PREPROCESS_SCHEDULES: Any = None


def register() -> None:
    """
    Make this package's algorithms zoo algorithms (:data:`ALGORITHMS`): in rl_zoo3's ALGOS, HYPERPARAMS_SAMPLER and
    HYPERPARAMS_CONVERTER; and make rl_zoo3 read ``target_kl: lin_<initial>`` as a schedule, as it reads
    ``learning_rate``'s (:func:`linear_schedule`).

    :raises MissingExtraError: (an ImportError) when the ``zoo`` extra is not installed
    """
    require("zoo", "sb3_trpo_ext.zoo.register()")
    from rl_zoo3 import hyperparams_opt, utils
    from rl_zoo3.exp_manager import ExperimentManager

    # rl_zoo3 makes "lin_<initial>" a schedule for learning_rate and PPO's clip ranges only; target_kl takes one too.
    global _RL_ZOO3_PREPROCESS_SCHEDULES
    if _RL_ZOO3_PREPROCESS_SCHEDULES is None:
        _RL_ZOO3_PREPROCESS_SCHEDULES = ExperimentManager._preprocess_schedules
        ExperimentManager._preprocess_schedules = staticmethod(_preprocess_schedules_with_target_kl)  # type: ignore[method-assign]

    for algo, algorithm in ALGORITHMS.items():
        utils.ALGOS[algo] = algorithm
        hyperparams_opt.HYPERPARAMS_SAMPLER[algo] = SAMPLERS[algo]
        hyperparams_opt.HYPERPARAMS_CONVERTER[algo] = convert_trpo_ext_params


__all__ = [
    "ALGO",
    "ALGORITHMS",
    "accepted_hyperparameters",
    "config_path",
    "convert_trpo_ext_params",
    "linear_schedule",
    "register",
    "sample_maskable_trpo_ext_params",
    "sample_npg_ext_params",
    "sample_recurrent_trpo_ext_params",
    "sample_trpo_ext_params",
    "unknown_hyperparameters",
]
