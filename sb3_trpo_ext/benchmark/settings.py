"""
What each benchmarked algorithm is given: its rl-zoo hyperparameters, read as rl_zoo3 reads them, or, with
``same_settings``, this TRPO's entry for both TRPOs with one true trust region.
"""

import copy
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from sb3_trpo_ext.fisher import kl_averaged_dimensions
from sb3_trpo_ext.trpo import TRPO
from sb3_trpo_ext.zoo import ALGO, config_path, linear_schedule, linear_schedule_start
from sb3_trpo_ext.zoo import ALGORITHMS as OWN_ALGORITHMS
from sb3_trpo_ext.zoo.values import zoo_value

#: Benchmark name -> label in reports. This package's algorithms take their entries from its own zoo files, the
#: others from rl_zoo3's.
ALGORITHMS = {
    ALGO: "sb3-trpo-ext TRPO",
    "trpo": "sb3-contrib TRPO",
    "ppo": "SB3 PPO",
    "npg_ext": "sb3-trpo-ext NPG",
    "recurrent_trpo_ext": "sb3-trpo-ext RecurrentTRPO",
    "ppo_lstm": "sb3-contrib RecurrentPPO",
}

#: What a benchmark compares unless told otherwise.
DEFAULT_ALGORITHMS = (ALGO, "trpo", "ppo")

#: The algorithm the others are compared with.
REFERENCE = "trpo"

#: Zoo keys that shape the environment or the run rather than the algorithm.
ENV_KEYS = ("n_envs", "n_timesteps", "normalize", "policy", "env_kwargs")

#: Zoo keys that need rl_zoo3's wrappers or callbacks; the benchmark does not rebuild those.
UNSUPPORTED_KEYS = ("env_wrapper", "vec_env_wrapper", "frame_stack", "callback", "normalize_kwargs", "monitor_kwargs")

#: Zoo keys whose value may be a schedule, "lin_<initial>" as rl_zoo3 writes it (target_kl: this package's algorithms).
SCHEDULED_KEYS = ("learning_rate", "clip_range", "clip_range_vf", "target_kl")


def algorithm_class(algo: str) -> type[OnPolicyAlgorithm]:
    if algo in OWN_ALGORITHMS:
        return OWN_ALGORITHMS[algo]
    if algo == "ppo":
        return PPO
    if algo == "trpo":
        from sb3_contrib import TRPO as ContribTRPO

        return ContribTRPO
    if algo == "ppo_lstm":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO
    raise ValueError(f"algo must be one of {list(ALGORITHMS)}, got {algo!r}")


def zoo_config_path(algo: str) -> Path:
    """This package's files for its algorithms; rl_zoo3's own files for the others (``trpo``, ``ppo``, ``ppo_lstm``)."""
    if algo in OWN_ALGORITHMS:
        return config_path(algo)
    import rl_zoo3

    return Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml"


def zoo_entry(algo: str, env_id: str) -> tuple[str, dict[str, Any]]:
    """
    The zoo entry for ``env_id``: the exact id, else the newest other version of the same task (rl_zoo3's
    files still name MuJoCo tasks -v4 while gymnasium has -v5), else ``default``.

    :return: the entry's name and a copy of its hyperparameters
    """
    entries = yaml.safe_load(zoo_config_path(algo).read_text())
    name = env_id if env_id in entries else None
    if name is None:
        task = env_id.rsplit("-v", 1)[0]
        versions = [key for key in entries if key.rsplit("-v", 1)[0] == task and key.rsplit("-v", 1)[-1].isdigit()]
        name = max(versions, key=lambda key: int(key.rsplit("-v", 1)[1]), default="default")
    return name, copy.deepcopy(entries[name])


@dataclass
class RunSettings:
    """Everything needed to build one benchmark run's environment and model."""

    algo: str
    entry_name: str
    n_envs: int
    n_timesteps: int
    policy: str
    normalize_kwargs: dict[str, Any] | None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] | None = None

    def model(self, env: Any, seed: int) -> OnPolicyAlgorithm:
        return algorithm_class(self.algo)(self.policy, env, seed=seed, verbose=0, **self.hyperparameters)


def settings_record(settings: RunSettings) -> dict[str, Any]:
    """The settings as a run file records them, and as a finished run must match to be reused."""
    return dict(
        entry=settings.entry_name,
        policy=settings.policy,
        hyperparameters={key: repr(value) for key, value in settings.hyperparameters.items()},
        n_envs=settings.n_envs,
        normalize=settings.normalize_kwargs is not None,
        normalize_kwargs=repr(settings.normalize_kwargs),
        # None when the entry has none, as in records written before entries could have them
        env_kwargs=settings.env_kwargs,
    )


def zoo_hyperparameters(hyperparameters: dict[str, Any], where: str) -> dict[str, Any]:
    """
    Zoo values as the constructor takes them, as rl_zoo3 makes them: "lin_<initial>" schedules, policy_kwargs text.

    :param where: what the values are, for an error message ("zoo entry 'CartPole-v1'")
    """
    converted = dict(hyperparameters)
    for key in SCHEDULED_KEYS:
        value = converted.get(key)
        if isinstance(value, str):
            converted[key] = linear_schedule(value, key, where)
    if isinstance(converted.get("policy_kwargs"), str):
        converted["policy_kwargs"] = zoo_value(converted["policy_kwargs"], f"policy_kwargs of {where}")
    return converted


def run_settings(entry_name: str, entry: dict[str, Any], algo: str, where: str | None = None) -> RunSettings:
    """
    Turn a zoo entry into constructor arguments the way rl_zoo3 does (schedules, normalisation, kwargs).

    :param where: what the entry is, for an error message (default: "zoo entry 'NAME'")
    """
    where = where or f"zoo entry {entry_name!r}"
    unsupported = [key for key in UNSUPPORTED_KEYS if key in entry]
    if unsupported:
        raise ValueError(f"{where} of {algo!r} uses {unsupported}, which the benchmark does not support")
    hyperparameters = {key: value for key, value in entry.items() if key not in ENV_KEYS}
    hyperparameters = zoo_hyperparameters(hyperparameters, where)
    normalize = entry.get("normalize", False)
    normalize_kwargs = None
    if normalize:
        normalize_kwargs = zoo_value(normalize, f"normalize of {where}") if isinstance(normalize, str) else {}
        if "gamma" in hyperparameters:
            normalize_kwargs["gamma"] = hyperparameters["gamma"]
    env_kwargs = entry.get("env_kwargs")
    if isinstance(env_kwargs, str):
        env_kwargs = zoo_value(env_kwargs, f"env_kwargs of {where}")
    return RunSettings(
        algo=algo,
        env_kwargs=env_kwargs,
        entry_name=entry_name,
        n_envs=int(entry.get("n_envs", 1)),
        n_timesteps=int(entry.get("n_timesteps", 1_000_000)),
        policy=entry.get("policy", "MlpPolicy"),
        normalize_kwargs=normalize_kwargs,
        hyperparameters=hyperparameters,
    )


def constant_trust_region(target_kl: Any, env_id: str) -> Any:
    """
    The trust region both TRPOs take with ``--same-settings``: the entry's number, or for a schedule
    ``"lin_<initial>"`` (linearly from ``initial`` to 0, which sb3-contrib's TRPO cannot take) the constant with the
    same mean over training, ``initial / 2``.
    """
    if not isinstance(target_kl, str):
        return target_kl
    return linear_schedule_start(target_kl, "target_kl", f"--same-settings on {env_id}") / 2


def settings_for(algo: str, env_id: str, same_settings: bool = False) -> RunSettings:
    """
    The settings ``algo`` runs with on ``env_id``.

    :param same_settings: give both TRPOs this TRPO's zoo entry (same batch, critic and CG settings) and the same
        true trust region: sb3-contrib's TRPO gets target_kl = delta / A and cg_damping = lambda / A, A being the
        number of KL terms it averages over, which makes its step this TRPO's step; it gets none of the knobs it
        does not have. A scheduled trust region is replaced, for both, by a constant
        (:func:`constant_trust_region`). Every other algorithm keeps its own entry.
    """
    if not same_settings or algo not in (ALGO, REFERENCE):
        return run_settings(*zoo_entry(algo, env_id), algo)
    name, entry = zoo_entry(ALGO, env_id)
    if "target_kl" in entry:
        entry = {**entry, "target_kl": constant_trust_region(entry["target_kl"], env_id)}
    if algo == "trpo":
        accepted = set(inspect.signature(algorithm_class("trpo").__init__).parameters) | set(ENV_KEYS)
        entry = {key: value for key, value in entry.items() if key in accepted}
        env = gym.make(env_id)
        dimensions = kl_averaged_dimensions(env.action_space)
        env.close()
        # sb3-contrib's Fisher is that of the averaged KL, F / A: its (F / A + lambda I) x = g is this TRPO's
        # (F + A lambda I) x = g, so both the radius and the damping are divided by A.
        defaults = inspect.signature(TRPO.__init__).parameters
        for key in ("target_kl", "cg_damping"):
            entry[key] = entry.get(key, defaults[key].default) / dimensions
    return run_settings(name, entry, algo)
