"""
How much a file may make a load allocate (docs/security.md): one limit in bytes, :func:`max_load_bytes`, for all that
one load builds from what the file declares. Each allocation is taken from a :class:`LoadBudget` before it is made,
on sizes known at that point (bytes actually decompressed, not the sizes a zip's directory declares).
"""

import math
import os

#: The environment variable that sets the limit, in bytes, for a file you trust with more.
LIMIT_VARIABLE = "SB3_TRPO_EXT_MAX_LOAD_BYTES"
DEFAULT_MAX_LOAD_BYTES = 2**30
#: What Python's objects may take for one byte of JSON text (a list of small numbers: 2 bytes of text, 36 of objects).
JSON_OBJECT_BYTES = 64
#: A count a file may declare that sizes other allocations (a space's elements, a Discrete's n, a Dict's members).
MAX_ELEMENTS = 2**24
#: The environments a file may ask for (rl_zoo3's ``n_envs``): each is a process or an object of unknown size.
MAX_ENVS = 1024
#: Bytes a ``policy.pth`` may hold beyond its tensors' (torch's file layout, the pickled names).
PTH_OVERHEAD_BYTES = 2**16
PTH_OVERHEAD_PER_TENSOR = 2**11


class LoadLimitError(ValueError):
    """A file declares more than a load may allocate; the message names what, the limit and the way to raise it."""


def max_load_bytes() -> int:
    """The limit: ``SB3_TRPO_EXT_MAX_LOAD_BYTES`` if set, else 1 GiB."""
    text = os.environ.get(LIMIT_VARIABLE)
    if text is None:
        return DEFAULT_MAX_LOAD_BYTES
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{LIMIT_VARIABLE}={text!r} is not a whole number of bytes") from None
    if value <= 0:
        raise ValueError(f"{LIMIT_VARIABLE}={text!r} must be a positive number of bytes")
    return value


class LoadBudget:
    """The bytes one load may still allocate from what a file declares."""

    def __init__(self, limit: int | None = None):
        self.limit = max_load_bytes() if limit is None else limit
        self.taken = 0

    def take(self, n_bytes: float, what: str) -> None:
        """Count ``n_bytes`` for ``what`` before allocating them; a :class:`LoadLimitError` past the limit."""
        if not math.isfinite(n_bytes) or self.taken + n_bytes > self.limit:
            raise LoadLimitError(
                f"{what} needs {n_bytes:.0f} bytes, past the {self.limit} a load may allocate ({self.taken} taken "
                f"already); set {LIMIT_VARIABLE} higher for a file you trust"
            )
        self.taken += int(n_bytes)


def read_text(path: str | os.PathLike, what: str) -> str:
    """
    A text file (JSON, YAML) whose parsed objects must fit the limit at :data:`JSON_OBJECT_BYTES` a byte, read no
    further than that: a file's size on disk is not trusted (a device or a pipe has none).
    """
    most = max_load_bytes() // JSON_OBJECT_BYTES
    with open(path, "rb") as file:
        text = file.read(most + 1)
    if len(text) > most:
        raise LoadLimitError(
            f"{path}: {what} of more than {most} bytes, past what a load may parse ({max_load_bytes()} bytes at "
            f"{JSON_OBJECT_BYTES} a byte); set {LIMIT_VARIABLE} higher for a file you trust"
        )
    return text.decode()
