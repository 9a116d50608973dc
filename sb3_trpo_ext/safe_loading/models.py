"""
A model zip as ``custom_objects`` for SB3's ``load`` that leave it nothing to unpickle, import or allocate past the
limit (docs/security.md): every pickled entry rebuilt from a plain description, the environment id used only if
registered, and the policy and rollout buffer the file declares sized before anything is built.
"""

import io
import pathlib
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer, MaskableRolloutBuffer
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from torch.overrides import TorchFunctionMode

from sb3_trpo_ext.safe_loading.allowlist import UnsafeFileError, full_name, known_classes, no_environment
from sb3_trpo_ext.safe_loading.archive import check_tensors, file_name, is_pickled, read_archive
from sb3_trpo_ext.safe_loading.foreign import sb3_description
from sb3_trpo_ext.safe_loading.limits import (
    MAX_ELEMENTS,
    PTH_OVERHEAD_BYTES,
    PTH_OVERHEAD_PER_TENSOR,
    LoadBudget,
    LoadLimitError,
)
from sb3_trpo_ext.safe_loading.plain import DERIVED, PLAIN, rebuild

#: Bytes a float32 buffer array takes per element, counted twice: SB3's ``get`` copies each array once, flattened.
_BUFFER_BYTES = 2 * 4
#: The rollout buffer's arrays of one number per step and environment (rewards, returns, starts, values, ...).
_SCALARS_PER_STEP = 6
#: What building a policy takes per element of one observation beyond its parameters: a sample of the space, its
#: float copy and a convolutional extractor's first activations (SB3 sizes its CNN by a forward pass).
_FORWARD_BYTES_PER_ELEMENT = 32
#: gSDE's noise per environment, and the temporaries of sampling it: matrices of latent x action numbers.
_SDE_MATRICES = 8


def safe_custom_objects(
    data: Mapping[str, Any],
    classes: Mapping[str, type],
    given: Mapping[str, Any] | None,
    budget: LoadBudget | None = None,
) -> dict[str, Any]:
    """
    ``custom_objects`` for SB3's ``load`` holding every pickled entry of ``data`` (so that SB3 unpickles none):
    those ``given``, the others rebuilt from their plain description, or from SB3's plain fields. A file naming an
    environment is refused (:func:`~sb3_trpo_ext.safe_loading.allowlist.no_environment`); a file's
    ``tensorboard_log`` is dropped with a warning (a file does not choose where anything is written).
    """
    objects = dict(given or {})
    for key, entry in data.items():
        if key in objects or not is_pickled(entry):
            continue
        if key in DERIVED:
            objects[key] = None
            continue
        description = entry[PLAIN] if PLAIN in entry else sb3_description(key, entry, classes)
        objects[key] = None if description is None else rebuild(description, classes, key, budget=budget)
    no_environment(data.get("env"), "env")
    if data.get("tensorboard_log") is not None and "tensorboard_log" not in objects:
        warnings.warn(
            f"the file's tensorboard_log {str(data['tensorboard_log'])[:80]!r} is not used (a file does not choose where "
            "logs are written); pass tensorboard_log=... to load",
            stacklevel=3,
        )
        objects["tensorboard_log"] = None
    return objects


def _count(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(_count(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return 1 + sum(_count(item) for item in value)
    return 1


class _StayOnMeta(TorchFunctionMode):
    """Inside it, ``Tensor.to`` leaves a meta tensor where it is: SB3's extractors move themselves to a device when
    built, which would copy out of the meta device (which cannot)."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is th.Tensor.to and args and isinstance(args[0], th.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def _mask_size(action_space: spaces.Space) -> int:
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete):
        return int(action_space.nvec.sum())
    if isinstance(action_space, spaces.MultiBinary):
        return 2 * spaces.flatdim(action_space)
    return 0


def _buffer_bytes(n_steps: int, n_envs: int, observation_space: Any, action_space: Any, policy: Any, masks: bool) -> int:
    """The rollout buffer's bytes (with the action masks of a maskable one) and an LSTM policy's states."""
    per_step = spaces.flatdim(observation_space) + spaces.flatdim(action_space) + _SCALARS_PER_STEP
    per_step += _mask_size(action_space) if masks else 0
    lstm = getattr(policy, "lstm_hidden_state_shape", None)  # (layers, 1, size): hidden and cell, actor and critic
    lstm_numbers = 4 * lstm[0] * lstm[2] if lstm else 0
    return _BUFFER_BYTES * (n_steps * n_envs * (per_step + lstm_numbers) + n_envs * lstm_numbers)


def check_declared_sizes(
    data: Mapping[str, Any],
    objects: Mapping[str, Any],
    sizes: Mapping[str, int],
    overrides: Mapping[str, Any],
    budget: LoadBudget,
    buffer_classes: Iterable[type] = (),
) -> None:
    """
    Take from ``budget`` what loading the file builds, before it is built, or refuse it: the policy it describes,
    built on torch's meta device (which allocates nothing), must fit in the bytes its ``policy.pth`` actually holds;
    its rollout buffer must fit too, with the action masks of a maskable one (its policy, ``rollout_buffer_class`` or
    ``buffer_classes`` say so) and an LSTM policy's states.
    """

    def value(key: str) -> Any:
        return overrides.get(key, objects.get(key, data.get(key)))

    observation_space, action_space, policy_class = value("observation_space"), value("action_space"), value("policy_class")
    if not (isinstance(observation_space, spaces.Space) and isinstance(action_space, spaces.Space)):
        raise ValueError("it does not describe its observation and action spaces")
    if not isinstance(policy_class, type):
        raise ValueError("it does not name its policy class")
    policy_kwargs = value("policy_kwargs") or {}
    if not isinstance(policy_kwargs, dict) or not all(isinstance(name, str) for name in policy_kwargs):
        raise ValueError(f"policy_kwargs {str(policy_kwargs)[:80]} is not a mapping of names")
    n_steps, n_envs = value("n_steps"), value("n_envs")
    if not (type(n_steps) is int and type(n_envs) is int and 0 < n_steps <= MAX_ELEMENTS and 0 < n_envs <= MAX_ELEMENTS):
        raise ValueError(f"n_steps {n_steps!r} and n_envs {n_envs!r} must be integers in [1, {MAX_ELEMENTS}]")
    if _count(policy_kwargs) > 4096:
        raise ValueError("policy_kwargs holds more than 4096 values")
    use_sde = value("use_sde") or False
    if not isinstance(use_sde, bool):
        raise ValueError(f"use_sde must be True or False, got {str(use_sde)[:80]!r}")
    kwargs = {name: item for name, item in policy_kwargs.items() if name not in ("device", "use_sde")}
    # Built without gSDE: it samples its noise when built, which the meta device cannot. Its log-std and noise
    # (latent x action matrices) are counted below.
    try:
        with th.device("meta"), _StayOnMeta():
            policy = policy_class(observation_space, action_space, lambda _: 0.0, **kwargs)
    except (RuntimeError, NotImplementedError) as error:
        raise ValueError(
            f"the policy it describes ({full_name(policy_class)}) could not be built to be sized: {error}"
        ) from None
    tensors = {id(tensor): tensor for tensor in policy.state_dict(keep_vars=True).values()}.values()  # shared once
    needed = sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    extractor = getattr(policy, "mlp_extractor", None)
    sde_matrix = 4 * getattr(extractor, "latent_dim_pi", 0) * spaces.flatdim(action_space) if use_sde else 0
    needed += sde_matrix  # gSDE's log-std
    held = sizes.get("policy.pth", 0)
    if needed > held + PTH_OVERHEAD_BYTES + PTH_OVERHEAD_PER_TENSOR * len(tensors):
        raise ValueError(f"the policy it describes holds {needed} bytes of parameters, its policy.pth only {held}")
    budget.take(needed, "the policy it describes")
    budget.take(_SDE_MATRICES * n_envs * sde_matrix, "its gSDE noise")
    budget.take(_FORWARD_BYTES_PER_ELEMENT * spaces.flatdim(observation_space), "its policy's first forward pass")
    masks = isinstance(policy, MaskableActorCriticPolicy) or any(
        isinstance(cls, type) and issubclass(cls, (MaskableRolloutBuffer, MaskableDictRolloutBuffer))
        for cls in (value("rollout_buffer_class"), *buffer_classes)
    )
    budget.take(
        _buffer_bytes(n_steps, n_envs, observation_space, action_space, policy, masks),
        f"its rollout buffer ({n_steps} steps x {n_envs} environments)",
    )


def custom_objects_without_pickle(
    path: str | pathlib.Path | io.BufferedIOBase, algorithm_class: type, given: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """
    ``custom_objects`` with which any SB3 algorithm's ``load`` (PPO's, sb3-contrib's TRPO's) unpickles, imports and
    allocates nothing the zip at ``path`` asks for past the limit: :func:`safe_custom_objects` with the algorithm's
    policy classes known, once its tensor files pass torch's weights-only loader and its sizes the load's budget.
    This package's algorithms do this themselves.

    :param path: the model zip, as a path or an open binary file
    :param algorithm_class: the class whose ``load`` will read the zip (e.g. ``PPO``); its ``policy_aliases`` are the
        policy classes the zip may name
    :param given: ``custom_objects`` of your own, used as they are in place of what the zip holds under those keys
    :raises UnsafeFileError: for an entry that only running code the file carries could restore
    :raises LoadLimitError: for a file that declares more than a load may allocate
    """
    budget = LoadBudget()
    try:
        data, sizes = read_archive(path, budget)
        check_tensors(path, measured=True)
        classes = known_classes(getattr(algorithm_class, "policy_aliases", {}).values())
        objects = safe_custom_objects(data, classes, given, budget)
        check_declared_sizes(data, objects, sizes, {}, budget)
    except (UnsafeFileError, LoadLimitError) as error:
        raise type(error)(f"{file_name(path)}: {error}") from None  # the file, the entry and the way out
    return objects
