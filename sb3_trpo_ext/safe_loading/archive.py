"""
Reading and writing model zips (docs/security.md). Each member is first read through once, in chunks that are not
kept, counting the bytes it actually decompresses to against the load's budget (the sizes a zip's directory declares
are the file author's word); only then is anything read whole: the ``data`` JSON, and the tensor files through torch's
weights-only loader.
"""

import contextlib
import io
import json
import pathlib
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import torch as th
from stable_baselines3.common.save_util import open_path

from sb3_trpo_ext.safe_loading.limits import JSON_OBJECT_BYTES, LoadBudget
from sb3_trpo_ext.safe_loading.plain import DERIVED, PLAIN, NotPlain, describe

_CHUNK = 2**20
#: A tensor file is held three times over while a model loads: its bytes, its tensors, their copy in the model.
_TENSOR_FILE_COPIES = 3


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


def file_name(path: str | pathlib.Path | io.BufferedIOBase) -> str:
    """How a refusal names the file: its path, or the file object's name."""
    return str(path) if isinstance(path, (str, pathlib.Path)) else str(getattr(path, "name", "the file object"))


def _member_sizes(archive: zipfile.ZipFile, budget: LoadBudget) -> dict[str, int]:
    """The bytes each member decompresses to, each chunk taken from ``budget`` as it is read (and then dropped), a
    tensor file's :data:`_TENSOR_FILE_COPIES` times."""
    sizes = {}
    for info in archive.infolist():
        size, copies = 0, _TENSOR_FILE_COPIES if info.filename.endswith(".pth") else 1
        with archive.open(info) as member:
            while chunk := member.read(_CHUNK):
                size += len(chunk)
                budget.take(copies * len(chunk), f"its member {info.filename!r}, decompressed to {size} bytes so far,")
        sizes[info.filename] = size
    return sizes


def read_archive(
    path: str | pathlib.Path | io.BufferedIOBase, budget: LoadBudget | None = None
) -> tuple[dict[str, Any], dict[str, int]]:
    """
    A model zip's ``data`` (its JSON, nothing unpickled) and the bytes each of its members actually holds, all taken
    from ``budget`` (a fresh one if None) before they are kept: the members as they decompress, the JSON at
    :data:`~sb3_trpo_ext.safe_loading.limits.JSON_OBJECT_BYTES` a byte. A file object is left where it was.
    """
    budget = budget or LoadBudget()
    with _opened_zip(path) as archive:
        sizes = _member_sizes(archive, budget)
        if "data" not in sizes:
            raise ValueError("it has no 'data' entry: the file is truncated or damaged, or not a model's zip")
        budget.take(JSON_OBJECT_BYTES * sizes["data"], "its 'data' entry, parsed")
        data = json.loads(archive.read("data").decode())
    if not isinstance(data, dict):
        raise ValueError("its 'data' entry is not a mapping")
    return data, sizes


def check_tensors(path: str | pathlib.Path | io.BufferedIOBase, measured: bool = False) -> None:
    """
    Read every tensor file (``.pth``) of the zip at ``path`` with torch's weights-only loader, which refuses a
    pickled object that is not a tensor (``pickle.UnpicklingError``): stable-baselines3 before 2.5 reads them with the
    full unpickler, which would run it. Unless :func:`read_archive` has ``measured`` the members already, they are read
    through first against a fresh budget, so that no member is read whole past the limit. A file object is left where
    it was.
    """
    with _opened_zip(path) as archive:
        if not measured:
            _member_sizes(archive, LoadBudget())
        for name in archive.namelist():
            if name.endswith(".pth"):
                th.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)


def is_pickled(entry: Any) -> bool:
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
        if is_pickled(entry) and key not in DERIVED:
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
