"""
Plain descriptions (docs/security.md): what ``save`` writes beside each entry SB3 pickles (a space by its type, shape,
dtype and exact bounds; a class by its module and name; a schedule by its numbers; an array by its raw bytes), and
what ``load`` rebuilds from them without running anything a file carries. A space is sized against the load's
:class:`~sb3_trpo_ext.safe_loading.limits.LoadBudget` before any of it is built.
"""

import base64
import binascii
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_trpo_ext.safe_loading.allowlist import SCHEDULE_CLASSES, UnsafeFileError, full_name, known_class, trust_hint
from sb3_trpo_ext.safe_loading.limits import MAX_ELEMENTS, LoadBudget

#: The field this package writes beside each pickled entry of a zip's ``data``: a plain description of it.
PLAIN = ":plain:"

#: Attributes ``_setup_model`` derives again (the learning-rate schedule from ``learning_rate``): never read.
DERIVED = frozenset({"lr_schedule"})

#: Numeric dtypes a file may name; anything else (objects, strings) is refused.
DTYPES = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64"}
)


class NotPlain(ValueError):
    """A value with no plain description (a custom class, a function); the message names the part."""


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


def _space_bytes(description: Any, key: str, depth: int = 0) -> int:
    """What building the space ``description`` declares allocates (a Box: its bounds, their copies and masks), from
    the description alone, so that a Dict is sized whole before any member is built."""
    if not isinstance(description, dict) or depth > 8:
        raise ValueError(f"{key}: a space is described by a mapping of at most 8 levels")
    space = description.get("space")
    if space == "Box":
        _, size = _size(description.get("shape"), key)
        return size * (4 * _dtype(description.get("dtype"), key).itemsize + 2)
    if space == "MultiDiscrete":
        _, size = _size(description.get("shape"), key)
        return size * 4 * 8
    if space == "Dict":
        subspaces = _field(description, "spaces", dict, key)
        if len(subspaces) > 1024:
            raise ValueError(f"{key}: a Dict space of {len(subspaces)} spaces")
        return sum(_space_bytes(sub, f"{key}[{name!r}]", depth + 1) for name, sub in subspaces.items())
    return 0


def rebuild_space(description: Any, key: str, budget: LoadBudget | None = None) -> spaces.Space:
    """The space ``description`` declares, its size taken from ``budget`` (a fresh one if None) before it is built."""
    (budget or LoadBudget()).take(_space_bytes(description, key), f"{key} (a space)")
    return _build_space(description, key)


def _build_space(description: Any, key: str, depth: int = 0) -> spaces.Space:
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
        rebuilt = {name: _build_space(sub, f"{key}[{name!r}]", depth + 1) for name, sub in subspaces.items()}
        if sum(spaces.flatdim(sub) for sub in rebuilt.values()) > MAX_ELEMENTS:
            raise ValueError(f"{key}: its spaces hold more than {MAX_ELEMENTS} elements")
        return spaces.Dict(rebuilt)
    raise ValueError(
        f"{key}: {space!r} is not a space this package rebuilds (Box, Discrete, MultiDiscrete, MultiBinary, Dict)"
    )


def rebuild(description: Any, classes: Mapping[str, type], key: str, depth: int = 0, budget: LoadBudget | None = None) -> Any:
    """
    The value a :func:`describe` description stands for, built from its plain fields alone; a space sized against
    ``budget`` first (:func:`rebuild_space`).

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
            rebuild(item, classes, f"{key}[{i}]", depth + 1, budget)
            for i, item in enumerate(_field(description, "items", list, key))
        ]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        items = _field(description, "items", dict, key)
        return {name: rebuild(item, classes, f"{key}[{name!r}]", depth + 1, budget) for name, item in items.items()}
    if kind == "class":
        return known_class(description.get("name"), classes, key)
    if kind == "space":
        return rebuild_space(description, key, budget)
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
        return deque((rebuild(item, classes, f"{key}[{i}]", depth + 1, budget) for i, item in enumerate(items)), maxlen=maxlen)
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
    cls = known_class(name, classes, key)
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
