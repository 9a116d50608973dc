"""
Loading files from others without running code they carry (docs/security.md). A model zip, VecNormalize statistics
or an rl_zoo3 config is data: nothing read from it is unpickled, evaluated, imported or called, it names no place to
write, and all that loading it allocates is sized first against one limit (:mod:`.limits`).

The parts, by job: :mod:`.allowlist` (what a file may name), :mod:`.plain` (plain descriptions and what is rebuilt
from them), :mod:`.foreign` (zips saved by SB3 and sb3-contrib), :mod:`.archive` (reading zips), :mod:`.limits`
(the budget), :mod:`.models` (a model zip as ``custom_objects``), :mod:`.saving` (what loading needs beyond SB3) and
:mod:`.vec_normalize` (statistics as JSON).
"""

from sb3_trpo_ext.safe_loading.allowlist import UnsafeFileError
from sb3_trpo_ext.safe_loading.limits import LIMIT_VARIABLE, LoadLimitError, max_load_bytes
from sb3_trpo_ext.safe_loading.models import custom_objects_without_pickle
from sb3_trpo_ext.safe_loading.vec_normalize import load_vec_normalize, save_vec_normalize

__all__ = [
    "LIMIT_VARIABLE",
    "LoadLimitError",
    "UnsafeFileError",
    "custom_objects_without_pickle",
    "load_vec_normalize",
    "max_load_bytes",
    "save_vec_normalize",
]
