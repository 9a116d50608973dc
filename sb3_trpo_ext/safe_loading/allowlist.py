"""
What a file may name: the classes a model zip may name (:func:`known_classes`), the schedules it may describe
(:data:`SCHEDULE_CLASSES`), the classes an rl_zoo3 config may name with the arguments each may take
(:data:`CONFIG_CLASSES`), and the environment it may not name (:func:`no_environment`). Names are matched
exactly, by module and qualified name; nothing a file says is imported unless this module lists it.
"""

import importlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch as th

#: Modules whose classes a file may name (``policy_class``, ``rollout_buffer_class``, classes in ``policy_kwargs``).
CLASS_MODULES = (
    "stable_baselines3.common.policies",
    "stable_baselines3.common.torch_layers",
    "stable_baselines3.common.buffers",
    "stable_baselines3.common.sb2_compat.rmsprop_tf_like",
    "sb3_contrib.common.maskable.policies",
    "sb3_contrib.common.maskable.buffers",
    "sb3_contrib.common.recurrent.policies",
    "sb3_contrib.common.recurrent.buffers",
    "torch.nn.modules.activation",
)
#: Schedules, the only objects a file may describe: built from their numbers, never by running their code.
SCHEDULE_CLASSES = (
    "stable_baselines3.common.utils.FloatSchedule",
    "stable_baselines3.common.utils.ConstantSchedule",
    "stable_baselines3.common.utils.LinearSchedule",
    "rl_zoo3.utils.SimpleLinearSchedule",
)

_TRUST_HINT = "pass custom_objects={{{key!r}: ...}}, or trust_pickle=True for a file you trust (it runs the file's code)"


def trust_hint(key: str) -> str:
    """The way out for an entry the safe path cannot rebuild: its value (the whole top-level entry), or trust."""
    return _TRUST_HINT.format(key=re.split(r"[\[.]", key, maxsplit=1)[0])


class UnsafeFileError(ValueError):
    """A file holds an entry that only running code it carries could restore; the message names it and the way out."""


class NotPlain(ValueError):
    """A value with no plain description (a custom class, a function); the message names the part."""


# --- which classes a file may name ---------------------------------------------------------------------------------


def full_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def known_classes(extra: Iterable[type] = ()) -> dict[str, type]:
    """The classes a file may name, by module and qualified name: SB3's and sb3-contrib's policies, feature
    extractors and rollout buffers, torch's activations and optimisers, and ``extra`` (the schedules of
    :data:`SCHEDULE_CLASSES` are looked up when a file names one)."""
    classes: dict[str, type] = {}
    for module_name in CLASS_MODULES:
        module = importlib.import_module(module_name)
        classes.update(
            {
                full_name(value): value
                for value in vars(module).values()
                if isinstance(value, type) and value.__module__ == module_name
            }
        )
    optimizers = (
        value for value in vars(th.optim).values() if isinstance(value, type) and issubclass(value, th.optim.Optimizer)
    )
    classes.update({full_name(value): value for value in optimizers})
    classes.update({full_name(cls): cls for cls in extra})
    return classes


def _schedule_class(name: str) -> type | None:
    """A class of :data:`SCHEDULE_CLASSES`, imported when a file names it (rl_zoo3's only then); None if missing."""
    module_name, _, class_name = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):  # rl_zoo3 not installed, or a stable-baselines3 before its schedules
        return None


def known_class(name: Any, classes: Mapping[str, type], key: str) -> type:
    if not isinstance(name, str):
        raise ValueError(f"{key}: a class is named by a string, got {name!r}")
    found = classes.get(name) or (_schedule_class(name) if name in SCHEDULE_CLASSES else None)
    if found is None:
        raise UnsafeFileError(f"{key}: the class {name} is not one this package rebuilds; " + trust_hint(key))
    return found


def no_environment(value: Any, key: str) -> None:
    """
    A model zip's environment entry: SB3 never saves one (it excludes ``env``), and loading one would ``gym.make``
    the name the file chose, importing its ``module:`` prefix, and set it over the model's environment: only None
    passes.

    :raises UnsafeFileError: naming the entry and the way out
    """
    if value is not None:
        raise UnsafeFileError(
            f"{key}: the file names the environment {str(value)[:80]!r}, which SB3 never saves (gym.make would import "
            "a 'module:' prefix); pass trust_pickle=True for a file you trust"
        )


#: The classes an rl_zoo3 config (``config.yml``, ``--conf-file``, ``--hyperparams``) may name under each key, with
#: the keyword arguments each may take from it and, for the ones that size an allocation, their largest value. No
#: argument names a file or a folder (Monitor's ``filename``, RecordVideo's ``video_folder``, a callback's
#: ``save_path``): a file may not choose where anything is written. ``VecFrameStack`` is sized against the load limit.
CONFIG_CLASSES: dict[str, dict[str, dict[str, int | None]]] = {
    "env_wrapper": {
        "gymnasium.wrappers.TimeLimit": {"max_episode_steps": None},
        "gymnasium.wrappers.ClipAction": {},
        "gymnasium.wrappers.RescaleAction": {"min_action": None, "max_action": None},
        "gymnasium.wrappers.FlattenObservation": {},
        "gymnasium.wrappers.ClipReward": {"min_reward": None, "max_reward": None},
        "stable_baselines3.common.monitor.Monitor": {"allow_early_resets": None, "info_keywords": None},
        "stable_baselines3.common.atari_wrappers.AtariWrapper": {
            "noop_max": None, "frame_skip": None, "terminal_on_life_loss": None, "clip_reward": None,
            "action_repeat_probability": None,
        },
        "sb3_contrib.common.wrappers.TimeFeatureWrapper": {"max_steps": None, "test_mode": None},
        "rl_zoo3.wrappers.TruncatedOnSuccessWrapper": {"reward_offset": None, "n_successes": None},
        "rl_zoo3.wrappers.ActionNoiseWrapper": {"noise_std": None},
        "rl_zoo3.wrappers.ActionSmoothingWrapper": {"smoothing_coef": None},
        "rl_zoo3.wrappers.DelayedRewardWrapper": {"delay": 2**16},
        "rl_zoo3.wrappers.HistoryWrapper": {"horizon": 2**8},
        "rl_zoo3.wrappers.HistoryWrapperObsDict": {"horizon": 2**8},
        "rl_zoo3.wrappers.FrameSkip": {"skip": 2**8},
        "rl_zoo3.wrappers.MaskVelocityWrapper": {},
        "rl_zoo3.wrappers.YAMLCompatResizeObservation": {"shape": 2**10},
    },
    "vec_env_wrapper": {
        "stable_baselines3.common.vec_env.VecFrameStack": {"n_stack": None, "channels_order": None},
        "stable_baselines3.common.vec_env.VecTransposeImage": {"skip": None},
        "stable_baselines3.common.vec_env.VecMonitor": {"info_keywords": None},
        "stable_baselines3.common.vec_env.VecCheckNan": {"raise_exception": None, "warn_once": None, "check_inf": None},
        "stable_baselines3.common.vec_env.VecExtractDictObs": {"key": None},
    },
    "callback": {
        "stable_baselines3.common.callbacks.StopTrainingOnMaxEpisodes": {"max_episodes": None, "verbose": None},
        "stable_baselines3.common.callbacks.ProgressBarCallback": {},
        "rl_zoo3.callbacks.RawStatisticsCallback": {"verbose": None},
    },
}  # fmt: skip

_PLAIN = (bool, int, float, str, type(None))


def literal(value: Any, bound: int | None, where: str, depth: int = 0) -> None:
    """Plain data only (numbers, strings, lists and tuples of them), its integers at most ``bound`` in size."""
    if isinstance(value, (list, tuple)) and depth < 4 and len(value) <= 64:
        for item in value:
            literal(item, bound, where, depth + 1)
        return
    if type(value) not in _PLAIN:
        raise UnsafeFileError(f"{where} is {str(value)[:80]!r}; a file gives numbers, strings and lists of them only")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        limit = bound if bound is not None else 2**31
        if not -limit <= value <= limit:
            raise UnsafeFileError(f"{where} is {value}, past {limit}, the most a file may ask for")


def config_class(key: str, name: Any, kwargs: Any, where: str) -> type:
    """
    The class an rl_zoo3 config names under ``key``, once :data:`CONFIG_CLASSES` allows it and each of its arguments.

    :raises UnsafeFileError: naming the class or the argument, what is allowed and the way out
    """
    allowed = CONFIG_CLASSES.get(key, {})
    if not isinstance(name, str) or name not in allowed:
        raise UnsafeFileError(
            f"{where}: {key} names {str(name)[:80]!r}, not a class a file may name there (docs/security.md lists them); "
            "pass --trust-pickle for a file you trust"
        )
    arguments = allowed[name]
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise UnsafeFileError(f"{where}: {key} {name} takes a mapping of arguments, got {str(kwargs)[:80]!r}")
    for argument, value in kwargs.items():
        if argument not in arguments:
            raise UnsafeFileError(
                f"{where}: {key} {name} may take {sorted(arguments) or 'no arguments'} from a file, not {argument!r} (a "
                "file may not name files or folders); pass --trust-pickle for a file you trust"
            )
        literal(value, arguments[argument], f"{where}: {key} {name} {argument}")
    module_name, _, class_name = name.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)
