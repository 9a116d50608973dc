"""
VecNormalize statistics as plain JSON (docs/security.md): SB3's ``VecNormalize.save`` pickles the whole wrapper, and
``VecNormalize.load`` unpickles it, which runs any code the file carries. :func:`save_vec_normalize` writes what
normalising needs (the running means, variances and counts, the clip values, gamma, epsilon, which keys are
normalised) and :func:`load_vec_normalize` reads it back onto a new wrapper; a ``.pkl`` is read only when trusted.
"""

import json
import math
import pathlib
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_trpo_ext.safe_loading.allowlist import UnsafeFileError
from sb3_trpo_ext.safe_loading.limits import read_text
from sb3_trpo_ext.safe_loading.plain import describe, rebuild

FORMAT = "sb3_trpo_ext/vec_normalize/1"
_SETTINGS = {
    "norm_obs": bool,
    "norm_reward": bool,
    "training": bool,
    "clip_obs": float,
    "clip_reward": float,
    "gamma": float,
    "epsilon": float,
}
#: Normalised observations are float32: a value outside float32's normal range overflows to inf or rounds to 0.
_TINY, _HUGE = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
#: The range of each number of the settings, as (low, high): any other gives inf, NaN or constant observations or
#: rewards without an error.
RANGES = {
    "clip_obs": (_TINY, _HUGE),
    "clip_reward": (_TINY, _HUGE),
    "epsilon": (_TINY, 1.0),
    "gamma": (0.0, 1.0),
}


def check_settings(settings: dict[str, Any], where: str) -> None:
    """Refuse VecNormalize settings (``clip_obs``, ``clip_reward``, ``epsilon``, ``gamma``; the flags) out of range,
    naming ``where`` and the field; keys it does not know are VecNormalize's to judge."""
    for name, value in settings.items():
        if _SETTINGS.get(name) is bool and not isinstance(value, bool):
            raise ValueError(f"{where}: {name} must be True or False, got {str(value)[:80]!r}")
        if name in RANGES:
            low, high = RANGES[name]
            if not (type(value) in (int, float) and math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{where}: {name} must be a number in [{low:g}, {high:g}], got {str(value)[:80]}")


def _statistics(rms: RunningMeanStd, what: str) -> dict[str, Any]:
    return {
        "mean": describe(np.asarray(rms.mean), f"{what}.mean", {}),
        "var": describe(np.asarray(rms.var), f"{what}.var", {}),
        "count": float(rms.count),
    }


def save_vec_normalize(venv: VecNormalize, path: str | pathlib.Path) -> None:
    """
    Write ``venv``'s statistics and settings to ``path`` as JSON (:data:`FORMAT`).

    :param venv: the VecNormalize whose statistics and settings are written
    :param path: the JSON file to write
    """
    obs_rms = venv.obs_rms
    state = {
        "format": FORMAT,
        **{name: getattr(venv, name) for name in _SETTINGS},
        "norm_obs_keys": getattr(venv, "norm_obs_keys", None),
        "obs_rms": (
            {key: _statistics(rms, f"obs_rms[{key!r}]") for key, rms in obs_rms.items()}
            if isinstance(obs_rms, dict)
            else _statistics(obs_rms, "obs_rms")
        ),
        "ret_rms": _statistics(venv.ret_rms, "ret_rms"),
    }
    pathlib.Path(path).write_text(json.dumps(state, indent=1))


def _rms(state: Any, shape: tuple[int, ...], what: str) -> RunningMeanStd:
    if not isinstance(state, dict):
        raise ValueError(f"{what} is not a mapping of mean, var and count")
    rms = RunningMeanStd(shape=shape)
    mean, var = rebuild(state.get("mean"), {}, f"{what}.mean"), rebuild(state.get("var"), {}, f"{what}.var")
    count: Any = state.get("count")
    for name, array in (("mean", mean), ("var", var)):
        if not (isinstance(array, np.ndarray) and array.shape == shape and np.issubdtype(array.dtype, np.floating)):
            raise ValueError(f"{what}.{name} must be a float array of shape {shape} (the environment's), got {array!r}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{what}.{name} must be finite, got {array[~np.isfinite(array)][:3]!r} among its values")
        if np.any(np.abs(array) > _HUGE):
            raise ValueError(f"{what}.{name} must lie within float32's range (+-{_HUGE:g}) among its values")
    if np.any(var < 0):
        raise ValueError(f"{what}.var must be >= 0, got {var[var < 0][:3]!r} among its values")
    if not (type(count) in (int, float) and math.isfinite(count) and count > 0):
        raise ValueError(f"{what}.count must be a positive number, got {count!r}")
    rms.mean, rms.var, rms.count = mean.astype(np.float64), var.astype(np.float64), float(count)
    return rms


def load_vec_normalize(path: str | pathlib.Path, venv: VecEnv, trust_pickle: bool = False) -> VecNormalize:
    """
    ``venv`` wrapped in a VecNormalize with the statistics and settings :func:`save_vec_normalize` wrote to ``path``.

    :param path: the JSON file :func:`save_vec_normalize` wrote (or, with ``trust_pickle``, SB3's ``.pkl``)
    :param venv: the environment to wrap; its observations must fit the statistics
    :param trust_pickle: read a ``.pkl`` (SB3's ``VecNormalize.save``) with SB3's ``VecNormalize.load``, which runs
        any code the file carries: only for a file you trust
    :raises UnsafeFileError: for a ``.pkl`` without ``trust_pickle``
    :raises ValueError: for a file that is not such JSON, or whose statistics do not fit ``venv``'s observations
    """
    path = pathlib.Path(path)
    if path.suffix == ".pkl":
        if not trust_pickle:
            raise UnsafeFileError(
                f"{path}: VecNormalize statistics as a pickle run any code the file carries; load the JSON that "
                "sb3_trpo_ext.safe_loading.save_vec_normalize writes, or pass trust_pickle=True for a file you trust"
            )
        return VecNormalize.load(str(path), venv)
    try:
        state = json.loads(read_text(path, "VecNormalize statistics"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{path}: not VecNormalize statistics as JSON ({error})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not VecNormalize statistics as JSON (no 'format': {FORMAT!r})")
    given: dict[str, Any] = {name: state.get(name) for name in _SETTINGS}
    check_settings(given, str(path))
    settings = {name: kind(given[name]) for name, kind in _SETTINGS.items()}
    keys = state.get("norm_obs_keys")
    observation_space = venv.observation_space
    try:
        if isinstance(observation_space, spaces.Dict):
            if not (isinstance(keys, list) and all(isinstance(key, str) and key in observation_space.spaces for key in keys)):
                raise ValueError(
                    f"norm_obs_keys must name keys of the observations {sorted(observation_space.spaces)}, got {keys!r}"
                )
            wrapper = VecNormalize(venv, **settings, norm_obs_keys=keys)  # type: ignore[arg-type]
            obs = state.get("obs_rms")
            if not (isinstance(obs, dict) and set(obs) == set(keys)):
                raise ValueError(f"obs_rms must hold the statistics of {keys}")
            shapes = {key: tuple(observation_space.spaces[key].shape or ()) for key in keys}
            obs_rms: Any = {key: _rms(obs[key], shapes[key], f"obs_rms[{key!r}]") for key in keys}
        else:
            wrapper = VecNormalize(venv, **settings)  # type: ignore[arg-type]
            obs_rms = _rms(state.get("obs_rms"), tuple(observation_space.shape or ()), "obs_rms")
        wrapper.obs_rms = obs_rms
        wrapper.ret_rms = _rms(state.get("ret_rms"), (), "ret_rms")
    except (ValueError, AssertionError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from None
    return wrapper
