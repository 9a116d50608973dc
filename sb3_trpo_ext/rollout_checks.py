"""Checks of a collected rollout before an update uses it."""

import numpy as np
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.type_aliases import TensorDict


def describe_nonfinite(buffer: RolloutBuffer) -> str | None:
    """
    Where the rollout holds a NaN or an infinity, as "non-finite rewards at step 12 of env 1 (3 entries)",
    looking at observations, rewards, values, advantages and returns in that order; None when all are finite.
    """
    observations = buffer.observations
    if isinstance(observations, dict):
        fields = [(f"observations[{key!r}]", value) for key, value in observations.items()]
    else:
        fields = [("observations", observations)]
    fields += [
        ("rewards", buffer.rewards),
        ("values", buffer.values),
        ("advantages", buffer.advantages),
        ("returns", buffer.returns),
    ]
    for name, array in fields:
        if array is None or np.isfinite(array).all():
            continue
        # Before get() the arrays are (n_steps, n_envs, ...); after it, flattened env by env.
        bad = ~np.isfinite(array.reshape(buffer.buffer_size * buffer.n_envs, -1)).all(axis=1)
        first = int(np.flatnonzero(bad)[0])
        if buffer.generator_ready:
            env, step = divmod(first, buffer.buffer_size)
        else:
            step, env = divmod(first, buffer.n_envs)
        return f"non-finite {name} at step {step} of env {env} ({int(bad.sum())} entries in the rollout)"
    return None


def describe_nonfinite_observation(
    observation: np.ndarray | dict[str, np.ndarray] | TensorDict | None, step: int
) -> str | None:
    """Which env's observation (an array, or a dict of them, one row per env) is not finite, at rollout step ``step``."""
    if observation is None:
        return None
    parts = observation.items() if isinstance(observation, dict) else [(None, observation)]
    for key, value in parts:
        if np.isfinite(value).all():  # the common case, checked with the fewest calls: this runs every step
            continue
        rows = np.asarray(value).reshape(len(value), -1)
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
        if len(bad):
            name = "observations" if key is None else f"observations[{key!r}]"
            return f"non-finite {name} at step {step} of env {int(bad[0])}"
    return None


def nonfinite_rollout_error(problem: str) -> ValueError:
    """The error for a rollout holding ``problem`` (from :func:`describe_nonfinite`), raised before anything changes."""
    return ValueError(
        f"The rollout holds {problem}; nothing was updated. Check the environment and its wrappers "
        "(VecNormalize, reward scaling), or pass on_nonfinite='skip' to skip such updates."
    )
