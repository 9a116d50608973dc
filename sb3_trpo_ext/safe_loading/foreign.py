"""
Zips saved elsewhere (sb3-contrib's TRPO, SB3's PPO): each pickled entry described from the plain fields SB3 writes
beside it (``":type:"`` and the object's printed attributes), for :func:`~sb3_trpo_ext.safe_loading.plain.rebuild`.
Bounds are read from their printed form, exact to the digits numpy prints; what those fields do not say is refused.
"""

import ast
import re
from collections.abc import Mapping
from typing import Any

from sb3_trpo_ext.safe_loading.allowlist import SCHEDULE_CLASSES, UnsafeFileError, trust_hint
from sb3_trpo_ext.safe_loading.limits import MAX_ELEMENTS

#: Attributes the rollout carries from step to step: rebuilt as None when a file has no plain form of them (so
#: ``learn`` starts from a reset of the environment, as it does after ``load`` with an ``env``).
RUNTIME_STATE = frozenset({"_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer", "ep_success_buffer"})

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
