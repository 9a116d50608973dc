"""
rl_zoo3's commands, run so that no file they read runs code (docs/security.md).

rl_zoo3 reads a trained agent's ``config.yml`` and ``args.yml`` with YAML's unsafe loader (any ``!!python/object``
tag runs), ``eval``s its ``normalize`` and ``policy_kwargs`` texts and ``--hyperparams`` values, imports the
wrappers and callbacks its entries name, and unpickles ``vecnormalize.pkl``. Inside :func:`guarded`:

- YAML is read by :class:`SafeZooLoader` (plain YAML, and the ``OrderedDict`` rl_zoo3 writes rebuilt from plain
  pairs) and written by :class:`SafeZooDumper` (plain mappings);
- YAML's aliases are bounded: a document expands to at most :data:`MAX_YAML_NODES` nodes (no "billion laughs");
- rl_zoo3's ``eval`` is :func:`~sb3_trpo_ext.zoo.values.zoo_value` (literals, ``dict(...)``, ``nn.<activation>``);
- rl_zoo3 resolves no name by importing it: the wrappers, callbacks and policies a config, a saved ``config.yml`` or
  ``--hyperparams`` names come from the exact allowlist
  (:data:`~sb3_trpo_ext.safe_loading.allowlist.CONFIG_CLASSES`), with literal arguments that name no place;
- a frame stack is sized against the load limit before it is built;
- a saved ``config.yml`` and ``args.yml`` are checked before rl_zoo3 reads them (:func:`check_saved_config`);
- VecNormalize statistics are saved as JSON beside the ``.pkl`` and read from the JSON
  (:mod:`sb3_trpo_ext.safe_loading.vec_normalize`); a ``.pkl`` alone is refused;
- a model of an algorithm outside this package (SB3's own ``load`` unpickles) is refused.

``--trust-pickle`` on the command line runs rl_zoo3 as it is, for files the user trusts.
"""

import functools
import io
import os
import pathlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import yaml
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack

from sb3_trpo_ext.safe_loading import UnsafeFileError, load_vec_normalize, save_vec_normalize
from sb3_trpo_ext.safe_loading.allowlist import config_class, known_classes, literal
from sb3_trpo_ext.safe_loading.limits import MAX_ENVS, LoadBudget, read_text
from sb3_trpo_ext.safe_loading.vec_normalize import check_settings
from sb3_trpo_ext.zoo.values import UnsafeValueError, zoo_value

#: Saved-config keys holding Python text that rl_zoo3 evaluates.
TEXT_KEYS = ("policy_kwargs", "normalize", "env_kwargs", "monitor_kwargs", "replay_buffer_kwargs")
#: Config keys naming classes that rl_zoo3 would import and call (a name, a {name: kwargs} or a list of them).
CLASS_KEYS = ("env_wrapper", "vec_env_wrapper", "callback", "replay_buffer_class")
#: Config keys whose numbers size what rl_zoo3 builds: positive integers, ``n_envs`` at most :data:`MAX_ENVS`.
COUNT_KEYS = ("n_envs", "frame_stack")
#: The nodes a YAML document may expand to, its aliases followed (a hyperparameter file has a few thousand).
MAX_YAML_NODES = 2**16


class SafeZooLoader(yaml.SafeLoader):
    """Plain YAML, plus the two Python tags rl_zoo3's files hold, built from plain data: an ``OrderedDict`` (from its
    list of pairs) and a tuple. Any other tag is refused by name, and a document whose aliases expand it past
    :data:`MAX_YAML_NODES` nodes is refused before it is built."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes of ``root`` with aliases followed (each time they occur), stopping past the bound."""
    count, pending = 0, [root]
    while pending:
        node = pending.pop()
        count += 1
        if count > MAX_YAML_NODES:
            raise UnsafeValueError(
                f"{root.start_mark.name}: its aliases expand it past {MAX_YAML_NODES} nodes; a file from elsewhere "
                "is refused so (--trust-pickle reads a file you trust as it is)"
            )
        if isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            pending.extend(item for pair in node.value for item in pair)


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
    """A YAML file of rl_zoo3's as :class:`SafeZooLoader` reads it, no larger than the load limit allows; a tag or an
    expansion it refuses is an UnsafeValueError."""
    stream = io.StringIO(read_text(path, "YAML"))
    stream.name = str(path)  # for the marks of YAML's errors
    try:
        return yaml.load(stream, Loader=SafeZooLoader)  # a SafeLoader: no tag runs code
    except yaml.constructor.ConstructorError as error:
        line = f" (line {error.problem_mark.line + 1})" if error.problem_mark else ""
        raise UnsafeValueError(f"{path}: {error.problem}{line}; a config from a file holds plain YAML only") from None
    except (yaml.YAMLError, RecursionError) as error:
        raise ValueError(f"{path}: not YAML ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None


def _named(value: Any) -> list[tuple[Any, Any]]:
    """The (name, arguments) pairs of a config's class key, in rl_zoo3's forms: a name, {name: kwargs}, a list."""
    items = value if isinstance(value, list) else [] if value is None else [value]
    pairs = []
    for item in items:
        if isinstance(item, dict) and len(item) == 1:
            pairs.append(next(iter(item.items())))
        else:
            pairs.append((item, None))
    return pairs


def check_entry(entry: dict[str, Any], where: str) -> None:
    """
    Refuse a config entry (a ``--conf-file`` entry, a saved ``config.yml``) that running it would run code from or
    that asks for too much: a text of :data:`TEXT_KEYS` that is not a plain zoo value, a class of :data:`CLASS_KEYS`
    or an argument of one outside the allowlist, a count of :data:`COUNT_KEYS` that is not a positive integer (or
    ``n_envs`` past :data:`MAX_ENVS`). The error names ``where``, the key and the construct.
    """
    for key in TEXT_KEYS:
        if isinstance(entry.get(key), str):
            zoo_value(entry[key], f"{where}: {key}")
    check_env_kwargs(entry.get("env_kwargs"), f"{where}: env_kwargs")
    normalize = entry.get("normalize")
    normalize = zoo_value(normalize, f"{where}: normalize") if isinstance(normalize, str) else normalize
    if isinstance(normalize, dict):
        try:
            check_settings(normalize, f"{where}: normalize")
        except ValueError as error:
            raise UnsafeValueError(str(error)) from None
    for key in CLASS_KEYS:
        for name, kwargs in _named(entry.get(key)):
            config_class(key, name, kwargs, where)
    for key in COUNT_KEYS:
        count = entry.get(key)
        if count is not None and not (type(count) is int and 0 < count <= (MAX_ENVS if key == "n_envs" else 2**31)):
            raise UnsafeValueError(
                f"{where}: {key} is {str(count)[:80]}; a file gives a positive integer"
                + (f" of at most {MAX_ENVS}" if key == "n_envs" else "")
            )


def check_saved_config(folder: str | os.PathLike) -> None:
    """
    Refuse a trained agent's ``config.yml`` or ``args.yml`` (in ``folder``) that reading it would run code from: a
    YAML tag other than plain data, aliases past the bound, an entry :func:`check_entry` refuses, ``env_kwargs``
    that are not plain data. An UnsafeValueError names the file, the key and the construct.
    """
    path = pathlib.Path(folder, "config.yml")
    if path.is_file():
        config = read_zoo_yaml(path)
        if not isinstance(config, dict):
            raise UnsafeValueError(f"{path}: not a mapping of hyperparameters")
        check_entry(config, str(path))
    path = pathlib.Path(folder, "args.yml")
    if path.is_file():
        args = read_zoo_yaml(path)
        if not isinstance(args, dict):
            raise UnsafeValueError(f"{path}: not a mapping of arguments")
        check_env_kwargs(args.get("env_kwargs"), f"{path}: env_kwargs")


def check_env_kwargs(value: Any, where: str) -> None:
    """
    Refuse an environment's keyword arguments from a file that are not plain data, or that name a place: a string
    with a path separator, or starting with ``.`` or ``~`` (MuJoCo's ``xml_file`` reads any model file it names, and
    a model can ask for any memory). A bare name is the environment's own (MuJoCo looks it up among its assets).
    """
    value = zoo_value(value, where) if isinstance(value, str) else value
    if value is None:
        return
    if not isinstance(value, dict):
        raise UnsafeValueError(f"{where} must be a mapping, got {str(value)[:80]!r}")
    for name, item in value.items():
        literal(item, None, f"{where}[{name!r}]")
        for text in _strings(item):
            if "/" in text or "\\" in text or text.startswith((".", "~")):
                raise UnsafeValueError(
                    f"{where}[{name!r}] is {text[:80]!r}, a path; a file may not name places (pass --env-kwargs "
                    "yourself, or --trust-pickle for a file you trust)"
                )


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in _strings(item)]
    return []


def _class_by_name(name: str) -> type:
    """rl_zoo3's ``get_class_by_name`` inside :func:`guarded`, which it calls for a ``policy`` with a dot: the
    policies a model zip may name, by exact name; nothing is imported."""
    policies = {full: cls for full, cls in known_classes().items() if issubclass(cls, BasePolicy)}
    if name not in policies:
        raise UnsafeFileError(
            f"policy {name!r} is not a policy class a config may name (SB3's and sb3-contrib's, by module and name, or "
            "an alias such as MlpPolicy); pass --trust-pickle for a file you trust"
        )
    return policies[name]


def _wrapper_class(hyperparams: dict[str, Any], key: str = "env_wrapper") -> Callable[[Any], Any] | None:
    """rl_zoo3's ``get_wrapper_class`` inside :func:`guarded`: the allowlisted wrappers with their checked
    arguments, applied in order; a frame stack sized against the load limit."""
    if hyperparams.get(key) is None:
        return None
    wrappers = []
    for name, kwargs in _named(hyperparams[key]):
        cls = config_class(key, name, kwargs, "the config")
        wrappers.append((_bounded_frame_stack if cls is VecFrameStack else cls, kwargs or {}))

    def wrap(env: Any) -> Any:
        for wrapper, kwargs in wrappers:
            env = wrapper(env, **kwargs)
        return env

    return wrap


def _callback_list(hyperparams: dict[str, Any]) -> list[Any]:
    """rl_zoo3's ``get_callback_list`` inside :func:`guarded`: the allowlisted callbacks with their checked arguments."""
    pairs = _named(hyperparams.get("callback"))
    return [config_class("callback", name, kwargs, "the config")(**(kwargs or {})) for name, kwargs in pairs]


def _bounded_frame_stack(venv: VecEnv, n_stack: Any, channels_order: Any = None) -> VecFrameStack:
    """SB3's ``VecFrameStack``, its stacks (``n_stack`` observations per environment, and a copy) sized first against
    the load limit."""
    if not (type(n_stack) is int and n_stack > 0):
        raise UnsafeValueError(f"frame_stack is {str(n_stack)[:80]!r}; a file gives a positive integer")
    space = venv.observation_space
    members = space.spaces.values() if isinstance(space, spaces.Dict) else [space]
    frame = sum(spaces.flatdim(member) * (member.dtype.itemsize if member.dtype else 8) for member in members)
    LoadBudget().take(2 * n_stack * venv.num_envs * frame, f"the config's frame stack of {n_stack} (frame_stack, n_stack)")
    return VecFrameStack(venv, n_stack, channels_order)


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
        patch(mock.patch.object(yaml, "safe_load", functools.partial(yaml.load, Loader=SafeZooLoader)))
        patch(mock.patch.object(yaml, "dump", functools.partial(yaml.dump, Dumper=SafeZooDumper)))
        for module in (rl_zoo3.utils, rl_zoo3.exp_manager):
            patch(mock.patch.object(module, "eval", _zoo_eval, create=True))
        for module in (rl_zoo3.utils, rl_zoo3.exp_manager):
            patch(mock.patch.object(module, "get_class_by_name", _class_by_name))
            patch(mock.patch.object(module, "get_wrapper_class", _wrapper_class))
            patch(mock.patch.object(module, "get_callback_list", _callback_list))
            patch(mock.patch.object(module, "VecFrameStack", _bounded_frame_stack))
        for module in (rl_zoo3.utils, rl_zoo3.enjoy):
            patch(mock.patch.object(module, "get_saved_hyperparams", _checked(module.get_saved_hyperparams)))
        patch(mock.patch.object(VecNormalize, "load", staticmethod(_load_statistics)))
        patch(mock.patch.object(VecNormalize, "save", _save_statistics(VecNormalize.save)))
        patch(mock.patch.object(save_util, "cloudpickle", _RefusingCloudpickle(save_util.cloudpickle)))
        yield
