"""sb3-trpo-ext: natural-gradient algorithms for Stable-Baselines3 (TRPO with the trust region on the true KL, NPG,
MaskableTRPO, MaskableNPG, RecurrentTRPO), and RayVecEnv to sample on a Ray cluster."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version

from sb3_trpo_ext.maskable import MaskableNPG, MaskableTRPO
from sb3_trpo_ext.npg import NPG
from sb3_trpo_ext.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_trpo_ext.ray_vec_env import RayVecEnv
from sb3_trpo_ext.recurrent import RecurrentTRPO
from sb3_trpo_ext.trpo import TRPO

__all__ = [
    "NPG",
    "TRPO",
    "CnnPolicy",
    "MaskableNPG",
    "MaskableTRPO",
    "MlpPolicy",
    "MultiInputPolicy",
    "RayVecEnv",
    "RecurrentTRPO",
]
# The installed distribution's version, so that pyproject.toml is the one place that states it; a source tree used
# without installing it has none.
try:
    __version__ = _installed_version("sb3-trpo-ext")
except PackageNotFoundError:
    __version__ = "0+unknown"
