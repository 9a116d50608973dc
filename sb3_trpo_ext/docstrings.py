"""
Each parameter documented once: an algorithm's docstring gives the ``:param`` lines where it differs from the classes
it is built from, and :func:`with_every_parameter` completes it with theirs, in the constructor's order (what
``help()`` and the API reference show).
"""

import inspect
import re

_PARAM = re.compile(r"^:param (\w+):")


def parameter_lines(docstring: str | None) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """A docstring (cleaned of its indentation) as the text before its ``:param`` lines, each parameter's lines (its
    ``:param`` line and the indented lines continuing it), and the text after them."""
    before: list[str] = []
    parameters: dict[str, list[str]] = {}
    after: list[str] = []
    current = None
    for line in inspect.cleandoc(docstring or "").splitlines():
        match = _PARAM.match(line)
        if match:
            current = match.group(1)
            parameters[current] = [line]
        elif current is not None and line.startswith(" "):
            parameters[current].append(line)
        elif parameters:
            current = None
            after.append(line)
        else:
            before.append(line)
    return before, parameters, after


def with_every_parameter(cls: type) -> None:
    """
    Give ``cls`` a docstring with a ``:param`` entry for every parameter of its ``__init__``: its own docstring's
    entry, else that of the nearest class in its MRO whose own docstring has one. The class's own docstring is kept
    as ``_own_doc`` for its subclasses to read.
    """
    own_doc = vars(cls).get("__doc__")
    cls._own_doc = own_doc  # type: ignore[attr-defined]
    before, _, after = parameter_lines(own_doc)
    documented: dict[str, list[str]] = {}
    for base in cls.__mro__:
        _, parameters, _ = parameter_lines(vars(base).get("_own_doc", vars(base).get("__doc__")))
        for name, lines in parameters.items():
            documented.setdefault(name, lines)
    init = cls.__init__  # type: ignore[misc]  # the class's own constructor, read from the class
    names = [name for name in inspect.signature(init).parameters if name != "self"]
    entries = [line for name in names for line in documented.get(name, [])]
    while before and not before[-1].strip():
        before.pop()
    cls.__doc__ = "\n".join([*before, "", *entries, *after]).strip() + "\n"
