"""
rl_zoo3's commands, run so that no file they read runs code (docs/security.md).

rl_zoo3 reads a trained agent's ``config.yml`` and ``args.yml`` with YAML's unsafe loader (any ``!!python/object``
tag runs), ``eval``s its ``normalize`` and ``policy_kwargs`` texts and ``--hyperparams`` values, imports the
wrappers and callbacks its entries name, and unpickles ``vecnormalize.pkl``. Inside :func:`guarded`:

- YAML is read by :class:`SafeZooLoader` (plain YAML, and the ``OrderedDict`` rl_zoo3 writes rebuilt from plain
  pairs) and written by :class:`SafeZooDumper` (plain mappings);
- rl_zoo3's ``eval`` is :func:`~sb3_trpo_ext.zoo.values.zoo_value` (literals, ``dict(...)``, ``nn.<activation>``);
- a saved ``config.yml`` is checked before rl_zoo3 reads it (:func:`check_saved_config`): its texts by
  ``zoo_value``, the wrappers and callbacks it names from the packages in :data:`CLASS_PACKAGES` only;
- VecNormalize statistics are saved as JSON beside the ``.pkl`` and read from the JSON
  (:mod:`sb3_trpo_ext.vec_normalize`); a ``.pkl`` alone is refused;
- a model of an algorithm outside this package (SB3's own ``load`` unpickles) is refused.

``--trust-pickle`` on the command line runs rl_zoo3 as it is, for files the user trusts.
"""

import functools
import importlib
import os
import pathlib
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import yaml

from sb3_trpo_ext.safe_loading import UnsafeFileError
from sb3_trpo_ext.vec_normalize import load_vec_normalize, save_vec_normalize
from sb3_trpo_ext.zoo.values import UnsafeValueError, zoo_value

#: Saved-config keys holding Python text that rl_zoo3 evaluates.
TEXT_KEYS = ("policy_kwargs", "normalize", "env_kwargs", "monitor_kwargs", "replay_buffer_kwargs")
#: Saved-config keys naming classes that rl_zoo3 imports and calls (a name, a {name: kwargs} or a list of them).
CLASS_KEYS = ("env_wrapper", "vec_env_wrapper", "callback", "replay_buffer_class")
#: The packages whose classes a saved config may name for those keys.
CLASS_PACKAGES = ("gymnasium.wrappers", "stable_baselines3", "sb3_contrib", "rl_zoo3", "sb3_trpo_ext")


class SafeZooLoader(yaml.SafeLoader):
    """Plain YAML, plus the two Python tags rl_zoo3's files hold, built from plain data: an ``OrderedDict`` (from its
    list of pairs) and a tuple. Any other tag is refused by name."""


def _ordered_dict(loader: SafeZooLoader, node: yaml.Node) -> OrderedDict:
    if not isinstance(node, yaml.SequenceNode) or len(node.value) != 1:
        raise yaml.constructor.ConstructorError(
            None, None, "an OrderedDict holds one list of [key, value] pairs", node.start_mark
        )
    pairs = loader.construct_sequence(node.value[0], deep=True)
    if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
        raise yaml.constructor.ConstructorError(None, None, "an OrderedDict holds [key, value] pairs", node.start_mark)
    return OrderedDict((key, value) for key, value in pairs)


SafeZooLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _ordered_dict)
SafeZooLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node, deep=True))
)


class SafeZooDumper(yaml.SafeDumper):
    """Plain YAML: an ``OrderedDict`` as a mapping in its order, a tuple with the tag :class:`SafeZooLoader` reads."""


SafeZooDumper.add_representer(
    OrderedDict, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data.items())
)
SafeZooDumper.add_representer(tuple, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:python/tuple", data))


def read_zoo_yaml(path: str | os.PathLike) -> Any:
    """A YAML file of rl_zoo3's as :class:`SafeZooLoader` reads it; a tag it refuses is an UnsafeValueError."""
    with open(path) as file:
        try:
            return yaml.load(file, Loader=SafeZooLoader)  # a SafeLoader: no tag runs code
        except yaml.constructor.ConstructorError as error:
            line = f" (line {error.problem_mark.line + 1})" if error.problem_mark else ""
            raise UnsafeValueError(f"{path}: {error.problem}{line}; a saved config holds plain YAML only") from None
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as error:
            raise ValueError(
                f"{path}: not YAML ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
            ) from None


def _class_names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [str(name) for name in value]
    if isinstance(value, list):
        return [name for item in value for name in _class_names(item)]
    return []


def check_saved_config(folder: str | os.PathLike) -> None:
    """
    Refuse a trained agent's ``config.yml`` (in ``folder``) that reading it would run code from: a YAML tag other
    than plain data, a text of :data:`TEXT_KEYS` that is not a plain zoo value, a class of :data:`CLASS_KEYS`
    outside :data:`CLASS_PACKAGES`. An UnsafeValueError names the key and the construct.
    """
    path = pathlib.Path(folder, "config.yml")
    if not path.is_file():
        return
    config = read_zoo_yaml(path)
    if not isinstance(config, dict):
        raise UnsafeValueError(f"{path}: not a mapping of hyperparameters")
    for key in TEXT_KEYS:
        if isinstance(config.get(key), str):
            zoo_value(config[key], f"{path}: {key}")
    for key in CLASS_KEYS:
        for name in _class_names(config.get(key)):
            module_name, _, class_name = name.rpartition(".")
            if not module_name.startswith(tuple(f"{package}." for package in CLASS_PACKAGES) + CLASS_PACKAGES):
                raise UnsafeValueError(
                    f"{path}: {key} names {name!r}; a saved config may name classes of {', '.join(CLASS_PACKAGES)} only"
                )
            if any(part.startswith("_") for part in name.split(".")):  # a __main__ module runs when imported
                raise UnsafeValueError(f"{path}: {key} names {name!r}; a saved config may name public classes only")
            try:
                found = getattr(importlib.import_module(module_name), class_name, None)
            except ImportError:
                found = None
            if not isinstance(found, type):
                raise UnsafeValueError(f"{path}: {key} names {name!r}, which is not a class")


def _zoo_eval(text: str, *_: Any) -> Any:
    return zoo_value(text, "a value given to rl_zoo3")


class _RefusingCloudpickle:
    """cloudpickle as SB3's zip reader sees it inside :func:`guarded`: ``loads`` refuses, the rest is cloudpickle's."""

    def __init__(self, cloudpickle: Any):
        self._cloudpickle = cloudpickle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cloudpickle, name)

    @staticmethod
    def loads(*_: Any, **__: Any) -> Any:
        raise UnsafeFileError(
            "this model's zip holds pickled entries that only running its code restores (models of this package's "
            "algorithms load without); pass --trust-pickle for a file you trust"
        )


def _checked(get_saved_hyperparams: Any) -> Any:
    @functools.wraps(get_saved_hyperparams)
    def checked(stats_path: str, *args: Any, **kwargs: Any) -> Any:
        check_saved_config(stats_path)
        return get_saved_hyperparams(stats_path, *args, **kwargs)

    return checked


def _load_statistics(path: str, venv: Any) -> Any:
    """rl_zoo3's ``VecNormalize.load(".../vecnormalize.pkl", env)``: the JSON beside it, never the pickle."""
    beside = pathlib.Path(path).with_suffix(".json")
    if not beside.is_file():
        raise UnsafeFileError(
            f"{path}: VecNormalize statistics as a pickle run any code the file carries and there is no {beside.name} "
            "beside it (sb3-trpo-ext train writes one); pass --trust-pickle for a file you trust"
        )
    return load_vec_normalize(beside, venv)


def _save_statistics(save: Any) -> Any:
    @functools.wraps(save)
    def saved(venv: Any, path: str) -> None:
        save(venv, path)
        save_vec_normalize(venv, pathlib.Path(path).with_suffix(".json"))

    return saved


@contextmanager
def guarded() -> Iterator[None]:
    """rl_zoo3 and SB3 patched as the module says, for the block only."""
    import rl_zoo3.enjoy
    import rl_zoo3.exp_manager
    import rl_zoo3.utils
    from stable_baselines3.common import save_util
    from stable_baselines3.common.vec_env import VecNormalize

    with ExitStack() as stack:
        patch = stack.enter_context
        patch(mock.patch.object(yaml, "UnsafeLoader", SafeZooLoader))
        patch(mock.patch.object(yaml, "dump", functools.partial(yaml.dump, Dumper=SafeZooDumper)))
        for module in (rl_zoo3.utils, rl_zoo3.exp_manager):
            patch(mock.patch.object(module, "eval", _zoo_eval, create=True))
        for module in (rl_zoo3.utils, rl_zoo3.enjoy):
            patch(mock.patch.object(module, "get_saved_hyperparams", _checked(module.get_saved_hyperparams)))
        patch(mock.patch.object(VecNormalize, "load", staticmethod(_load_statistics)))
        patch(mock.patch.object(VecNormalize, "save", _save_statistics(VecNormalize.save)))
        patch(mock.patch.object(save_util, "cloudpickle", _RefusingCloudpickle(save_util.cloudpickle)))
        yield
