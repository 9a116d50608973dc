"""
The optional extras: which modules each one brings, and one clear error when a feature's extra is missing.

The base install (``pip install sb3-trpo-ext``) is enough for ``TRPO`` itself; the command lines and the zoo
integration need more, and say which extra to install instead of failing deep inside an import.
"""

import importlib.util
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

#: Extra -> the modules it installs that the package imports.
EXTRAS: dict[str, tuple[str, ...]] = {
    "zoo": ("rl_zoo3", "optuna", "yaml"),
    "plots": ("matplotlib", "seaborn"),
    "bench": ("rl_zoo3", "yaml", "pandas", "matplotlib", "rliable"),
    "mujoco": ("mujoco",),
    "box2d": ("Box2D",),
    "ray": ("ray",),
}

Function = TypeVar("Function", bound=Callable[..., Any])


class MissingExtraError(ImportError):
    """A feature was used without the optional extra that installs what it needs."""


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    if extra not in EXTRAS:
        raise ValueError(f"extra must be one of {sorted(EXTRAS)}, got {extra!r}")
    missing = []
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def require(extra: str, feature: str) -> None:
    """
    Raise :class:`MissingExtraError` naming the ``pip install`` command, for a release and for a checkout, when ``extra``
    is not installed.

    :param feature: what needs it, as the message's subject (for example ``"the benchmark"``)
    """
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(
            f'{feature} needs the "{extra}" extra, which is not installed (missing: {", ".join(missing)}): '
            f'pip install "sb3-trpo-ext[{extra}]" (from a checkout: pip install ".[{extra}]")'
        )


def exits_on_missing_extra(main: Function) -> Function:
    """A command line's ``main``: a missing extra ends it with one line on stderr and exit status 1, no traceback."""

    @wraps(main)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except MissingExtraError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(1) from None

    return guarded  # type: ignore[return-value]


def env_extra(env_id: str) -> str | None:
    """The extra a registered gymnasium task needs (``mujoco``, ``box2d``), or None."""
    import gymnasium as gym

    try:
        entry_point = gym.spec(env_id).entry_point
    except gym.error.Error:
        return None  # an unknown id: gymnasium says so itself where the task is made
    module = entry_point if isinstance(entry_point, str) else getattr(entry_point, "__module__", "")
    return next((extra for extra in ("mujoco", "box2d") if f"gymnasium.envs.{extra}" in module), None)


def require_env(env_id: str) -> None:
    """Raise :class:`MissingExtraError` when ``env_id`` needs an extra that is not installed."""
    extra = env_extra(env_id)
    if extra is not None:
        require(extra, env_id)


def unknown_env(env_id: str) -> str | None:
    """Why gymnasium cannot make ``env_id``, with the closest registered id, in one line; None if it is registered (or
    names its module, ``module:Id``, which gymnasium imports)."""
    import difflib

    import gymnasium as gym

    if ":" in env_id or env_id in gym.registry:
        return None
    close = difflib.get_close_matches(env_id, list(gym.registry), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown task {env_id!r}{hint}; gymnasium's registry lists the tasks (importing a package registers its own)"
