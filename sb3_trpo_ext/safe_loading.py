"""
Loading a model zip without running code it carries (docs/security.md).

SB3 writes each attribute that JSON cannot hold (the spaces, the policy class, schedules, the last observations) as a
cloudpickle payload, a ``":serialized:"`` field, and beside it some plain fields for people to read. Unpickling such
a payload can run any code the file's author chose. The safe path never unpickles: it rebuilds each such attribute
from a plain description, which :func:`with_plain_descriptions` writes into this package's zips (the ``":plain:"``
field, ignored by SB3's own loader), or, for zips saved elsewhere (sb3-contrib's TRPO), from the plain fields SB3
writes. Classes are taken only from an allowlist (:func:`known_classes`), objects only of SB3's (and rl_zoo3's)
schedule classes, rebuilt from their numbers. What cannot be rebuilt so is refused by name
(:class:`UnsafeFileError`), naming the way out: ``custom_objects`` or ``trust_pickle=True`` for a trusted file.

Before anything is allocated the declared sizes are checked against the file: each space holds at most
:data:`MAX_ELEMENTS` elements, the policy the file describes (built on torch's meta device, which allocates nothing)
holds no more parameter bytes than the file's ``policy.pth`` declares, and the rollout buffer at most
:data:`MAX_BUFFER_ELEMENTS` numbers.
"""

import ast
import base64
import binascii
import contextlib
import importlib
import io
import json
import math
import pathlib
import re
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from unittest import mock

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.save_util import open_path

#: The field this package writes beside each pickled entry of a zip's ``data``: a plain description of it.
PLAIN = ":plain:"
#: What a space (or an array) of a file may hold: 2**24 elements (an 84x84x4 image stack holds 28,224).
MAX_ELEMENTS = 2**24
#: What the rollout buffer of a loaded model may hold: n_steps x n_envs x observation elements.
MAX_BUFFER_ELEMENTS = 2**31
#: The largest ``data`` entry read: its JSON, not its weights.
MAX_DATA_BYTES = 2**28
#: Bytes a ``policy.pth`` may hold beyond its tensors' (torch's file layout, the pickled names).
PTH_OVERHEAD_BYTES = 2**16
PTH_OVERHEAD_PER_TENSOR = 2**11

#: Attributes the rollout carries from step to step: rebuilt as None when a file has no plain form of them (so
#: ``learn`` starts from a reset of the environment, as it does after ``load`` with an ``env``).
RUNTIME_STATE = frozenset({"_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer", "ep_success_buffer"})
#: Attributes ``_setup_model`` derives again (the learning-rate schedule from ``learning_rate``): never read.
DERIVED = frozenset({"lr_schedule"})

#: Numeric dtypes a file may name; anything else (objects, strings) is refused.
DTYPES = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64"}
)

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


def _known(name: Any, classes: Mapping[str, type], key: str) -> type:
    if not isinstance(name, str):
        raise ValueError(f"{key}: a class is named by a string, got {name!r}")
    found = classes.get(name) or (_schedule_class(name) if name in SCHEDULE_CLASSES else None)
    if found is None:
        raise UnsafeFileError(f"{key}: the class {name} is not one this package rebuilds; " + trust_hint(key))
    return found


# --- plain descriptions: what save writes, what load rebuilds ------------------------------------------------------


def describe(value: Any, what: str, classes: Mapping[str, type]) -> dict[str, Any]:
    """
    A plain (JSON) description of ``value`` that :func:`rebuild` turns back into an equal value.

    :raises NotPlain: naming the part of ``what`` that has none (a class outside ``classes``, a function, an
        arbitrary object)
    """
    if isinstance(value, spaces.Space):
        return {"kind": "space", **_describe_space(value, what)}
    if isinstance(value, type):
        if classes.get(full_name(value)) is not value:
            raise NotPlain(f"{what} ({full_name(value)})")
        return {"kind": "class", "name": full_name(value)}
    if isinstance(value, np.ndarray):
        return _describe_array(value, what)
    if isinstance(value, np.generic):
        return {"kind": "number", "dtype": _dtype_name(value.dtype, what), "value": value.item()}
    if isinstance(value, deque):
        return {
            "kind": "deque",
            "maxlen": value.maxlen,
            "items": [describe(item, f"{what}[{i}]", classes) for i, item in enumerate(value)],
        }
    if isinstance(value, dict) and all(isinstance(name, str) for name in value):
        return {"kind": "dict", "items": {name: describe(item, f"{what}[{name!r}]", classes) for name, item in value.items()}}
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        items = [describe(item, f"{what}[{i}]", classes) for i, item in enumerate(value)]
        return {"kind": type(value).__name__, "items": items}
    if value is None or type(value) in (bool, int, float, str):
        return {"kind": "value", "value": value}
    if full_name(type(value)) in SCHEDULE_CLASSES:
        fields = {name: describe(field, f"{what}.{name}", classes) for name, field in vars(value).items()}
        return {"kind": "object", "class": full_name(type(value)), "fields": fields}
    raise NotPlain(f"{what} ({value!r})")


def _dtype_name(dtype: np.dtype, what: str) -> str:
    if dtype.name not in DTYPES:
        raise NotPlain(f"{what} (dtype {dtype})")
    return dtype.name


def _describe_array(array: np.ndarray, what: str) -> dict[str, Any]:
    dtype = _dtype_name(array.dtype, what)
    data = base64.b64encode(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()).decode()
    return {"kind": "ndarray", "dtype": dtype, "shape": list(array.shape), "data": data}


def _flat(array: np.ndarray) -> Any:
    """An array as JSON: one number when all its elements are equal (bounds usually are), else the flat list."""
    flat = array.reshape(-1)
    if flat.size and np.all(flat == flat[0]) and not np.isnan(flat[0]):
        return flat[0].item()
    return flat.tolist()


def _describe_space(space: spaces.Space, what: str) -> dict[str, Any]:
    if isinstance(space, spaces.Box):
        dtype = _dtype_name(space.dtype, what)
        return {"space": "Box", "shape": list(space.shape), "dtype": dtype, "low": _flat(space.low), "high": _flat(space.high)}
    if isinstance(space, spaces.Discrete):
        return {"space": "Discrete", "n": int(space.n), "start": int(space.start), "dtype": _dtype_name(space.dtype, what)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "space": "MultiDiscrete",
            "shape": list(space.shape),
            "nvec": space.nvec.reshape(-1).tolist(),
            "start": space.start.reshape(-1).tolist(),
            "dtype": _dtype_name(space.dtype, what),
        }
    if isinstance(space, spaces.MultiBinary):
        n: Any = space.n
        return {"space": "MultiBinary", "n": [int(size) for size in np.ravel(n)] if np.ndim(n) else int(n)}
    if isinstance(space, spaces.Dict):
        return {
            "space": "Dict",
            "spaces": {name: _describe_space(sub, f"{what}[{name!r}]") for name, sub in space.spaces.items()},
        }
    raise NotPlain(f"{what} ({space})")


def _field(description: Mapping[str, Any], name: str, kinds: type | tuple[type, ...], key: str) -> Any:
    if name not in description:
        raise ValueError(f"{key}: its description has no {name!r}")
    value = description[name]
    if not isinstance(value, kinds) or (
        isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,))
    ):
        raise ValueError(f"{key}: {name!r} is {value!r}, not a {kinds}")
    return value


def _size(shape: Any, key: str) -> tuple[tuple[int, ...], int]:
    if not (isinstance(shape, list) and all(type(dim) is int and dim >= 0 for dim in shape)) or len(shape) > 32:
        raise ValueError(f"{key}: the shape {shape!r} is not a list of at most 32 sizes")
    size = math.prod(shape)
    if size > MAX_ELEMENTS:
        raise ValueError(f"{key}: the shape {shape} holds {size} elements, more than the {MAX_ELEMENTS} a file may declare")
    return tuple(shape), size


def _dtype(name: Any, key: str) -> np.dtype:
    if name not in DTYPES:
        raise ValueError(f"{key}: dtype {name!r} is not one of {sorted(DTYPES)}")
    return np.dtype(name)


def _numbers(values: Any, shape: tuple[int, ...], size: int, dtype: np.dtype, key: str) -> np.ndarray:
    """An array of ``shape`` from one number (every element) or a flat list of ``size`` numbers."""
    number = (int, float)
    if isinstance(values, number) and not isinstance(values, bool):
        return np.full(shape, values, dtype=dtype)
    if (
        isinstance(values, list)
        and len(values) == size
        and all(isinstance(v, number) and not isinstance(v, bool) for v in values)
    ):
        return np.array(values, dtype=dtype).reshape(shape)
    raise ValueError(f"{key}: expected a number or {size} numbers, got {str(values)[:80]}")


def _rebuild_space(description: Any, key: str, depth: int = 0) -> spaces.Space:
    if not isinstance(description, dict) or depth > 8:
        raise ValueError(f"{key}: a space is described by a mapping of at most 8 levels")
    space = description.get("space")
    if space == "Box":
        shape, size = _size(description.get("shape"), key)
        dtype = _dtype(description.get("dtype"), key)
        with np.errstate(over="ignore", invalid="ignore"):
            low = _numbers(description.get("low"), shape, size, dtype, f"{key} low")
            high = _numbers(description.get("high"), shape, size, dtype, f"{key} high")
        return spaces.Box(low, high, shape, dtype)
    if space == "Discrete":
        n, start = _field(description, "n", int, key), _field(description, "start", int, key)
        if not 0 < n <= MAX_ELEMENTS:
            raise ValueError(f"{key}: n = {n} is not in [1, {MAX_ELEMENTS}]")
        dtype = _dtype(description.get("dtype", "int64"), key)
        if dtype != np.int64:  # gymnasium before 1.1 has int64 Discrete spaces only
            return spaces.Discrete(n, start=start, dtype=dtype)
        return spaces.Discrete(n, start=start)
    if space == "MultiDiscrete":
        shape, size = _size(description.get("shape"), key)
        dtype = _dtype(description.get("dtype"), key)
        nvec = _numbers(description.get("nvec"), shape, size, np.dtype("int64"), f"{key} nvec")
        start = _numbers(description.get("start"), shape, size, np.dtype("int64"), f"{key} start")
        if size and (nvec.min() < 1 or nvec.sum() > MAX_ELEMENTS):
            raise ValueError(f"{key}: nvec must be positive and sum to at most {MAX_ELEMENTS}")
        return spaces.MultiDiscrete(nvec, dtype=dtype, start=start)
    if space == "MultiBinary":
        n = description.get("n")
        shape, _ = _size(n if isinstance(n, list) else [n], key)
        return spaces.MultiBinary(list(shape) if isinstance(n, list) else shape[0])
    if space == "Dict":
        subspaces = _field(description, "spaces", dict, key)
        if len(subspaces) > 1024:
            raise ValueError(f"{key}: a Dict space of {len(subspaces)} spaces")
        rebuilt = {name: _rebuild_space(sub, f"{key}[{name!r}]", depth + 1) for name, sub in subspaces.items()}
        if sum(spaces.flatdim(sub) for sub in rebuilt.values()) > MAX_ELEMENTS:
            raise ValueError(f"{key}: its spaces hold more than {MAX_ELEMENTS} elements")
        return spaces.Dict(rebuilt)
    raise ValueError(
        f"{key}: {space!r} is not a space this package rebuilds (Box, Discrete, MultiDiscrete, MultiBinary, Dict)"
    )


def rebuild(description: Any, classes: Mapping[str, type], key: str, depth: int = 0) -> Any:
    """
    The value a :func:`describe` description stands for, built from its plain fields alone.

    :raises UnsafeFileError: for a class outside ``classes``
    :raises ValueError: for a malformed description, naming ``key``
    """
    if not isinstance(description, dict) or depth > 32:
        raise ValueError(f"{key}: a description is a mapping of at most 32 levels, got {str(description)[:80]}")
    kind = description.get("kind")
    if kind == "value":
        value = description.get("value")
        if not (value is None or type(value) in (bool, int, float, str)):
            raise ValueError(f"{key}: {str(value)[:80]} is not a plain value")
        return value
    if kind in ("list", "tuple"):
        items = [
            rebuild(item, classes, f"{key}[{i}]", depth + 1) for i, item in enumerate(_field(description, "items", list, key))
        ]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        items = _field(description, "items", dict, key)
        return {name: rebuild(item, classes, f"{key}[{name!r}]", depth + 1) for name, item in items.items()}
    if kind == "class":
        return _known(description.get("name"), classes, key)
    if kind == "space":
        return _rebuild_space(description, key)
    if kind == "ndarray":
        return _rebuild_array(description, key)
    if kind == "number":
        dtype = _dtype(description.get("dtype"), key)
        return dtype.type(_field(description, "value", (bool, int, float), key))
    if kind == "deque":
        maxlen = description.get("maxlen")
        if not (maxlen is None or (type(maxlen) is int and 0 <= maxlen <= MAX_ELEMENTS)):
            raise ValueError(f"{key}: maxlen {maxlen!r} is not a size")
        items = _field(description, "items", list, key)
        return deque((rebuild(item, classes, f"{key}[{i}]", depth + 1) for i, item in enumerate(items)), maxlen=maxlen)
    if kind == "object":
        return _rebuild_schedule(description, classes, key, depth)
    raise ValueError(f"{key}: {kind!r} is not a kind of description")


def _rebuild_array(description: dict[str, Any], key: str) -> np.ndarray:
    shape, size = _size(description.get("shape"), key)
    dtype = _dtype(description.get("dtype"), key)
    try:
        data = base64.b64decode(_field(description, "data", str, key), validate=True)
    except binascii.Error as error:
        raise ValueError(f"{key}: its data is not base64 ({error})") from None
    if len(data) != size * dtype.itemsize:
        raise ValueError(f"{key}: {len(data)} bytes for {size} elements of {dtype}")
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def _rebuild_schedule(description: dict[str, Any], classes: Mapping[str, type], key: str, depth: int) -> Any:
    """A schedule of SB3's (or rl_zoo3's) classes, made without its constructor and given the fields described."""
    name = description.get("class")
    if name not in SCHEDULE_CLASSES:
        raise UnsafeFileError(f"{key}: an object of {name} is not one this package rebuilds; " + trust_hint(key))
    fields = _field(description, "fields", dict, key)
    for field, value in fields.items():  # numbers, or the schedule a FloatSchedule wraps: nothing else is called
        if not (isinstance(value, dict) and value.get("kind") in ("value", "number", "object")):
            raise ValueError(f"{key}.{field}: a schedule holds numbers and schedules only, got {str(value)[:80]}")
    cls = _known(name, classes, key)
    schedule: Any = object.__new__(cls)
    fields = {field: rebuild(value, classes, f"{key}.{field}", depth + 1) for field, value in fields.items()}
    vars(schedule).update(fields)
    _check_schedule(schedule, key)
    return schedule


def _check_schedule(schedule: Any, key: str) -> None:
    """A rebuilt schedule gives a finite number at the start and at the end, or it is refused."""
    try:
        values = [float(schedule(progress)) for progress in (1.0, 0.0)]
    except (TypeError, ValueError, AttributeError, ArithmeticError, RecursionError) as error:
        raise ValueError(f"{key}: the schedule it describes does not give numbers ({error})") from None
    if not all(math.isfinite(value) for value in values):
        raise ValueError(f"{key}: the schedule it describes gives {values} at the start and end")


# --- the plain fields SB3 writes, for zips saved elsewhere --------------------------------------------------------

_CLASS_TEXT = re.compile(r"<class '([\w.]+)'>")
_METHOD_TEXT = re.compile(r"<function ([\w.]+)\.\w+ at 0x[0-9a-fA-F]+>")


def _printed_array(text: Any, key: str) -> list[float]:
    """The numbers of an array as numpy prints it (``[-1. -1. -8.]``); refused when numpy left some out (``...``)."""
    if not isinstance(text, str) or "..." in text or len(text) > 64 * MAX_ELEMENTS:
        raise UnsafeFileError(f"{key}: its plain fields do not hold all its numbers; " + trust_hint(key))
    try:
        return [float(token) for token in text.replace("[", " ").replace("]", " ").split()]
    except ValueError:
        raise ValueError(f"{key}: {text[:80]!r} is not a printed array") from None


def _printed_int(value: Any, key: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{key}: {str(value)[:80]!r} is not an integer") from None


def _sb3_space(type_name: str, fields: Mapping[str, Any], key: str) -> dict[str, Any]:
    space = type_name.rpartition(".")[2]
    shape = fields.get("_shape")
    if space == "Box":
        low, high = _printed_array(fields.get("low"), key), _printed_array(fields.get("high"), key)
        return {"kind": "space", "space": "Box", "shape": shape, "dtype": fields.get("dtype"), "low": low, "high": high}
    if space == "Discrete":
        n, start = _printed_int(fields.get("n"), key), _printed_int(fields.get("start", 0), key)
        return {"kind": "space", "space": "Discrete", "n": n, "start": start, "dtype": fields.get("dtype", "int64")}
    if space == "MultiDiscrete":
        nvec = [int(v) for v in _printed_array(fields.get("nvec"), key)]
        printed_start = fields.get("start")
        starts = [int(v) for v in _printed_array(printed_start, key)] if printed_start is not None else 0
        return {
            "kind": "space",
            "space": "MultiDiscrete",
            "shape": shape,
            "nvec": nvec,
            "start": starts,
            "dtype": fields.get("dtype"),
        }
    if space == "MultiBinary":
        size: Any = fields.get("n")
        return {
            "kind": "space",
            "space": "MultiBinary",
            "n": size if isinstance(size, (int, list)) else [int(v) for v in _printed_array(size, key)],
        }
    raise UnsafeFileError(f"{key}: a {type_name} is rebuilt only from this package's zips; " + trust_hint(key))


def _sb3_class(fields: Mapping[str, Any], classes: Mapping[str, type], key: str) -> dict[str, Any]:
    """A class as SB3 writes it (its module, its methods' printed names): the one known class that matches."""
    module = fields.get("__module__")
    methods = (_METHOD_TEXT.fullmatch(value) for value in fields.values() if isinstance(value, str))
    names = {method.group(1) for method in methods if method}
    if len(names) == 1:
        return {"kind": "class", "name": f"{module}.{names.pop()}"}
    same_doc = [name for name, cls in classes.items() if cls.__module__ == module and cls.__doc__ == fields.get("__doc__")]
    if len(same_doc) == 1:
        return {"kind": "class", "name": same_doc[0]}
    raise UnsafeFileError(f"{key}: a class of {module} this package cannot name from its plain fields; " + trust_hint(key))


def _sb3_value(value: Any, key: str) -> dict[str, Any]:
    """An item of a pickled dict as SB3 writes it: itself when JSON could hold it, else printed (a class's name)."""
    if isinstance(value, str):
        match = _CLASS_TEXT.fullmatch(value)
        if match:
            return {"kind": "class", "name": match.group(1)}
        if value.startswith("<"):
            raise UnsafeFileError(f"{key}: {value[:80]} is printed, not described; " + trust_hint(key))
    return _json_description(value, key)


def _json_description(value: Any, key: str, depth: int = 0) -> dict[str, Any]:
    if depth > 32:
        raise ValueError(f"{key}: nested more than 32 levels")
    if isinstance(value, dict):
        return {
            "kind": "dict",
            "items": {str(name): _json_description(item, f"{key}[{name!r}]", depth + 1) for name, item in value.items()},
        }
    if isinstance(value, list):
        return {"kind": "list", "items": [_json_description(item, f"{key}[{i}]", depth + 1) for i, item in enumerate(value)]}
    return {"kind": "value", "value": value}


def _printed_schedule(text: Any, key: str) -> dict[str, Any]:
    """``ConstantSchedule(val=0.001)`` or ``LinearSchedule(start=..., end=..., end_fraction=...)`` as SB3 prints them."""
    try:
        call = ast.parse(text, mode="eval").body if isinstance(text, str) and len(text) < 1000 else None
    except SyntaxError:
        call = None
    names = {name.rpartition(".")[2]: name for name in SCHEDULE_CLASSES}
    if (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id in names
        and not call.args
        and all(isinstance(k.value, ast.Constant) and isinstance(k.value.value, (int, float)) and k.arg for k in call.keywords)
    ):
        fields = {k.arg: {"kind": "value", "value": k.value.value} for k in call.keywords}  # type: ignore[attr-defined]
        return {"kind": "object", "class": names[call.func.id], "fields": fields}
    raise UnsafeFileError(f"{key}: the schedule {str(text)[:80]} has no plain form; " + trust_hint(key))


def sb3_description(key: str, entry: Mapping[str, Any], classes: Mapping[str, type]) -> dict[str, Any] | None:
    """
    A description of a pickled entry from the plain fields SB3 writes beside it (``":type:"`` and the object's
    attributes); None for the rollout's runtime state. Refused (:class:`UnsafeFileError`) when they do not say enough.
    """
    if key in RUNTIME_STATE:
        return None
    match = _CLASS_TEXT.fullmatch(str(entry.get(":type:", "")))
    type_name = match.group(1) if match else ""
    fields = {name: value for name, value in entry.items() if not name.startswith(":")}
    if type_name.startswith("gymnasium.spaces."):
        return _sb3_space(type_name, fields, key)
    if type_name in ("abc.ABCMeta", "type"):
        return _sb3_class(fields, classes, key)
    if type_name == "dict":
        return {"kind": "dict", "items": {name: _sb3_value(value, f"{key}[{name!r}]") for name, value in fields.items()}}
    if type_name == "stable_baselines3.common.utils.FloatSchedule":
        inner = _printed_schedule(fields.get("value_schedule"), key)
        return {"kind": "object", "class": type_name, "fields": {"value_schedule": inner}}
    if type_name in SCHEDULE_CLASSES:
        return {
            "kind": "object",
            "class": type_name,
            "fields": {name: _json_description(v, key) for name, v in fields.items()},
        }
    raise UnsafeFileError(f"{key}: a pickled {type_name or 'object'} this package does not rebuild; " + trust_hint(key))


# --- reading and writing zips --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _opened_zip(path: str | pathlib.Path | io.BufferedIOBase) -> Iterator[zipfile.ZipFile]:
    """The zip at ``path``; a file object is left where it was, for SB3 to read next."""
    file = open_path(path, "r", verbose=0, suffix="zip")
    position = file.tell()
    try:
        with zipfile.ZipFile(file) as archive:
            yield archive
    finally:
        if isinstance(path, (str, pathlib.Path)):
            file.close()
        else:
            file.seek(position)


def read_archive(path: str | pathlib.Path | io.BufferedIOBase) -> tuple[dict[str, Any], dict[str, int]]:
    """
    A model zip's ``data`` (its JSON, nothing unpickled) and the declared size of each of its members. A file object
    is left where it was.
    """
    with _opened_zip(path) as archive:
        sizes = {info.filename: info.file_size for info in archive.infolist()}
        if "data" not in sizes:
            raise ValueError("it has no 'data' entry")
        if sizes["data"] > MAX_DATA_BYTES:
            raise ValueError(f"its 'data' entry declares {sizes['data']} bytes")
        data = json.loads(archive.read("data").decode())
    if not isinstance(data, dict):
        raise ValueError("its 'data' entry is not a mapping")
    return data, sizes


def check_tensors(path: str | pathlib.Path | io.BufferedIOBase) -> None:
    """
    Read every tensor file (``.pth``) of the zip at ``path`` with torch's weights-only loader, which refuses a
    pickled object that is not a tensor (``pickle.UnpicklingError``): stable-baselines3 before 2.5 reads them with the
    full unpickler, which would run it. A file object is left where it was.
    """
    with _opened_zip(path) as archive:
        for name in archive.namelist():
            if name.endswith(".pth"):
                th.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)


def _is_pickled(entry: Any) -> bool:
    return isinstance(entry, dict) and ":serialized:" in entry


def with_plain_descriptions(archive: bytes, model: Any, classes: Mapping[str, type]) -> tuple[bytes, list[str]]:
    """
    The zip ``archive`` (as SB3's ``save`` wrote it for ``model``) with a plain description beside each pickled entry
    of its ``data``; and the parts that have none (a custom class in ``policy_kwargs``...), which only a trusted load
    restores.
    """
    source = zipfile.ZipFile(io.BytesIO(archive))
    data = json.loads(source.read("data").decode())
    missing = []
    for key, entry in data.items():
        if _is_pickled(entry) and key not in DERIVED:
            try:
                entry[PLAIN] = describe(getattr(model, key), key, classes)
            except NotPlain as error:
                missing.append(str(error))
    written = io.BytesIO()
    with zipfile.ZipFile(written, "w") as target:
        for info in source.infolist():
            content = json.dumps(data, indent=4).encode() if info.filename == "data" else source.read(info)
            target.writestr(info, content)
    return written.getvalue(), missing


def safe_custom_objects(
    data: Mapping[str, Any], classes: Mapping[str, type], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """
    ``custom_objects`` for SB3's ``load`` holding every pickled entry of ``data`` (so that SB3 unpickles none):
    those ``given``, the others rebuilt from their plain description, or from SB3's plain fields.
    """
    objects = dict(given or {})
    for key, entry in data.items():
        if key in objects or not _is_pickled(entry):
            continue
        if key in DERIVED:
            objects[key] = None
            continue
        description = entry[PLAIN] if PLAIN in entry else sb3_description(key, entry, classes)
        objects[key] = None if description is None else rebuild(description, classes, key)
    return objects


def _count(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(_count(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return 1 + sum(_count(item) for item in value)
    return 1


def check_declared_sizes(
    data: Mapping[str, Any], objects: Mapping[str, Any], sizes: Mapping[str, int], overrides: Mapping[str, Any]
) -> None:
    """
    Refuse a file whose declared sizes would allocate more than it holds: the policy it describes, built on torch's
    meta device (nothing allocated), must fit in its ``policy.pth``; its rollout buffer must hold at most
    :data:`MAX_BUFFER_ELEMENTS` numbers.
    """

    def value(key: str) -> Any:
        return overrides.get(key, objects.get(key, data.get(key)))

    observation_space, action_space, policy_class = value("observation_space"), value("action_space"), value("policy_class")
    if not (isinstance(observation_space, spaces.Space) and isinstance(action_space, spaces.Space)):
        raise ValueError("it does not describe its observation and action spaces")
    if not isinstance(policy_class, type):
        raise ValueError("it does not name its policy class")
    policy_kwargs = value("policy_kwargs") or {}
    if not isinstance(policy_kwargs, dict) or not all(isinstance(name, str) for name in policy_kwargs):
        raise ValueError(f"policy_kwargs {str(policy_kwargs)[:80]} is not a mapping of names")
    n_steps, n_envs = value("n_steps"), value("n_envs")
    if not (type(n_steps) is int and type(n_envs) is int and n_steps > 0 and n_envs > 0):
        raise ValueError(f"n_steps {n_steps!r} and n_envs {n_envs!r} must be positive integers")
    buffer = n_steps * n_envs * (spaces.flatdim(observation_space) + spaces.flatdim(action_space) + 8)
    if buffer > MAX_BUFFER_ELEMENTS:
        raise ValueError(f"n_steps x n_envs x (observation and action size) is {buffer}, more than {MAX_BUFFER_ELEMENTS}")
    if _count(policy_kwargs) > 4096:
        raise ValueError("policy_kwargs holds more than 4096 values")
    kwargs = {name: item for name, item in policy_kwargs.items() if name != "device"}
    # Built on the meta device: modules' .to(device) would copy out of it, so it is a no-op for this build only. gSDE
    # samples its noise when built, which the meta device cannot: its matrix (latent x action) is left out.
    try:
        with th.device("meta"), mock.patch.object(th.nn.Module, "to", lambda module, *_, **__: module):
            policy = policy_class(observation_space, action_space, lambda _: 0.0, **kwargs)
    except (RuntimeError, NotImplementedError) as error:
        raise ValueError(
            f"the policy it describes ({full_name(policy_class)}) could not be built to be sized: {error}"
        ) from None
    tensors = {id(tensor): tensor for tensor in policy.state_dict(keep_vars=True).values()}.values()  # shared once
    needed = sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    declared = sizes.get("policy.pth", 0)
    if needed > declared + PTH_OVERHEAD_BYTES + PTH_OVERHEAD_PER_TENSOR * len(tensors):
        raise ValueError(f"the policy it describes holds {needed} bytes of parameters, its policy.pth only {declared}")


def custom_objects_without_pickle(
    path: str | pathlib.Path | io.BufferedIOBase, algorithm_class: type, given: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """
    ``custom_objects`` with which any SB3 algorithm's ``load`` (PPO's, sb3-contrib's TRPO's) unpickles nothing from
    the zip at ``path``: :func:`safe_custom_objects` with the algorithm's policy classes known, once its tensor files
    pass torch's weights-only loader (:func:`check_tensors`). This package's algorithms do this themselves.
    """
    check_tensors(path)
    data, _ = read_archive(path)
    return safe_custom_objects(data, known_classes(getattr(algorithm_class, "policy_aliases", {}).values()), given)
