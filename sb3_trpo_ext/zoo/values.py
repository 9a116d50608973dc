"""
Zoo values written as Python text (``policy_kwargs: "dict(net_arch=[64, 64], activation_fn=nn.ReLU)"``, ``normalize``,
``env_kwargs``), read without running them: the text is parsed, and only literals, ``dict(...)`` with keywords, lists,
tuples, dicts and ``nn.<activation>`` become values. Anything else (a call, an attribute walk such as
``().__class__.__mro__``, a name) is refused with an :class:`UnsafeValueError` naming the key and the construct.
"""

import ast
from typing import Any

from torch import nn

from sb3_trpo_ext.safe_loading import UnsafeFileError

#: The activation classes a zoo value may name as ``nn.<Name>``.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    name: value
    for name, value in vars(nn.modules.activation).items()
    if isinstance(value, type) and issubclass(value, nn.Module) and value is not nn.Module
}

_NUMBERS = (int, float)
_CONSTANTS = (int, float, str, bool, type(None))


class UnsafeValueError(UnsafeFileError):
    """A zoo value holds a construct that reading it would have to run."""


def zoo_value(text: str, key: str) -> Any:
    """
    The value the Python text ``text`` of zoo key ``key`` writes, built from its parse tree without running it.

    :raises UnsafeValueError: for text that is not an expression, or holds anything but literals, ``dict(...)``,
        lists, tuples, dicts and ``nn.<activation>``
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise UnsafeValueError(f"{key}: {text!r} is not a Python expression ({error.msg})") from None
    return _value(tree.body, key, text)


def _value(node: ast.AST, key: str, text: str) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in _CONSTANTS:
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub | ast.UAdd)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in _NUMBERS
    ):
        number: float = node.operand.value  # type: ignore[assignment]
        return -number if isinstance(node.op, ast.USub) else number
    if isinstance(node, ast.List):
        return [_value(element, key, text) for element in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_value(element, key, text) for element in node.elts)
    if isinstance(node, ast.Dict) and all(item is not None for item in node.keys):
        return {_value(item, key, text): _value(value, key, text) for item, value in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "dict"
        and not node.args
        and all(keyword.arg is not None for keyword in node.keywords)
    ):
        return {keyword.arg: _value(keyword.value, key, text) for keyword in node.keywords}
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "nn":
        if node.attr in ACTIVATIONS:
            return ACTIVATIONS[node.attr]
    construct = ast.unparse(node)
    where = "" if construct == text.strip() else f" in {text!r}"
    raise UnsafeValueError(
        f"{key}: {construct!r}{where} is not allowed; a zoo value may hold only literals, dict(...), "
        "lists, tuples, dicts and nn.<activation> (nn.ReLU, nn.Tanh, ...)"
    )
