import builtins
import inspect
import os
import pickle
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import stable_baselines3
import torch
import yaml
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))
# The maintainer tools of the checkout (scripts/README.md), importable by name as they import one another.
sys.path.insert(1, str(Path(__file__).parent.parent / "scripts"))

# Small networks run fastest on one thread, and several threads on a busy machine many times slower (docs/performance.md).
torch.set_num_threads(1)

# "ci": what every test run does; "soak": the long run outside CI (docs/testing.md).
settings.register_profile("ci", max_examples=300)
settings.register_profile("soak", max_examples=10_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# Loading a file never runs code it carries (docs/security.md): every test whose source calls a loader runs with the
# functions that could (unpickling, eval, YAML's python tags) raising. A test of the trusted path is marked
# ``trusts_pickle``.
LOADERS = re.compile(
    r"\.load\(|load_from_zip_file|load_vec_normalize|set_parameters\(|\benjoy\b|record-video|read_zoo_config|"
    r"check_tensors|check_saved_config|custom_objects_without_pickle|_bounded_frame_stack|rebuild_space|guarded\(|main\("
)


class RanCodeFromAFile(AssertionError):
    """Raised by the functions that would run code a file carries, in a test that loads files."""


def _refuse(name: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RanCodeFromAFile(f"{name} was called while loading a file")

    return refuse


#: The packages whose code reads files (and a script run as __main__, as rl_zoo3's record_video is): an eval called
#: from them could run a file's text. Libraries' own evals of their constants at import (sympy's) are not refused.
FILE_READERS = frozenset({"sb3_trpo_ext", "rl_zoo3", "stable_baselines3", "sb3_contrib", "__main__"})


SB3_READS_TENSORS_WEIGHTS_ONLY = tuple(int(part) for part in stable_baselines3.__version__.split(".")[:2]) >= (2, 5)


class _RefusingUnpickler:
    """``pickle.Unpickler`` in a test that loads files: a class, so that libraries may still subclass it at import."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise RanCodeFromAFile("pickle.Unpickler was used while loading a file")


def _refuse_eval(original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(source: Any, globals: Any = None, locals: Any = None) -> Any:
        caller = sys._getframe(1)
        if caller.f_globals.get("__name__", "").split(".")[0] in FILE_READERS:
            raise RanCodeFromAFile("eval was called while loading a file")
        if globals is None:  # eval's own default, the caller's namespaces (this wrapper's would lose its locals)
            globals, locals = caller.f_globals, caller.f_locals if locals is None else locals
        return original(source, globals, locals)

    return guarded


def loads_files(function: Callable[..., Any]) -> bool:
    try:
        return bool(LOADERS.search(inspect.getsource(function)))
    except (OSError, TypeError):
        return False


@pytest.fixture(autouse=True)
def no_code_from_files(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("trusts_pickle") or not loads_files(request.function):
        return
    monkeypatch.setattr(pickle, "loads", _refuse("pickle.loads"))
    monkeypatch.setattr(pickle, "load", _refuse("pickle.load"))
    if SB3_READS_TENSORS_WEIGHTS_ONLY:  # before 2.5 SB3 reads the (already checked) tensor files with the full unpickler
        monkeypatch.setattr(pickle, "Unpickler", _RefusingUnpickler)  # torch.load(weights_only=False) subclasses it
    monkeypatch.setattr(cloudpickle, "loads", _refuse("cloudpickle.loads"))
    monkeypatch.setattr(builtins, "eval", _refuse_eval(builtins.eval))
    monkeypatch.setattr(yaml.constructor.FullConstructor, "find_python_name", _refuse("a YAML python/ tag"))
    monkeypatch.setattr(yaml.constructor.FullConstructor, "find_python_module", _refuse("a YAML python/ tag"))
