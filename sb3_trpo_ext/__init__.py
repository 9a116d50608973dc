"""sb3-trpo-ext: TRPO for Stable-Baselines3 with the trust region on the true KL."""

from sb3_trpo_ext.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_trpo_ext.trpo import TRPO

__all__ = ["TRPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
__version__ = "0.1.0"
