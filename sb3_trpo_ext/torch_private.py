"""
Every use of torch's private API, in one place, each with a public fallback: a torch release that renames or changes
one of them costs speed, never correctness. The private names are module constants, so that the tests can make them
disappear and run each fallback.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch as th
from torch import nn
from torch.optim import optimizer as torch_optimizer

FUSED_ADAM = "_fused_adam_"
FUSED_ADAMW = "_fused_adamw_"
OPTIMIZER_HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")
GLOBAL_OPTIMIZER_HOOKS = ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")
TANH_BACKWARD = "tanh_backward"
THRESHOLD_BACKWARD = "threshold_backward"
VALIDATE_ARGS = "_validate_args"
VERSION = "_version"
PARAMETERS = "_parameters"

#: (gradient, output) -> gradient before the activation, for y = act(x).
ChainRule = Callable[[th.Tensor, th.Tensor], th.Tensor]


class PrivateApiChanged(RuntimeError):
    """A private torch attribute this package relies on is missing or different: take the public route."""


def fused_adam_kernel(decoupled_weight_decay: bool) -> Callable[..., Any] | None:
    """torch's fused Adam (or AdamW) kernel, the one ``optimizer.step()`` runs for ``fused=True``; None if absent."""
    return getattr(th, FUSED_ADAMW if decoupled_weight_decay else FUSED_ADAM, None)


def has_no_step_hooks(optimizer: th.optim.Optimizer) -> bool:
    """Whether no step hook (the optimiser's or the global ones) would run; False when that cannot be told."""
    hooks = [getattr(optimizer, name, None) for name in OPTIMIZER_HOOKS]
    hooks += [getattr(torch_optimizer, name, None) for name in GLOBAL_OPTIMIZER_HOOKS]
    return all(hook is not None and len(hook) == 0 for hook in hooks)


def tanh_chain_rule() -> ChainRule:
    """g (1 - y^2): autograd's own kernel for tanh (the same rounding as autograd), else the formula."""
    kernel = getattr(th.ops.aten, TANH_BACKWARD, None)
    if kernel is not None:
        return kernel
    return lambda grad, output: grad * (1 - output * output)


def relu_chain_rule() -> ChainRule:
    """g [y > 0]: autograd's own kernel for ReLU, else the formula."""
    kernel = getattr(th.ops.aten, THRESHOLD_BACKWARD, None)
    if kernel is not None:
        return lambda grad, output: kernel(grad, output, 0)
    return lambda grad, output: grad * (output > 0)


@contextmanager
def distribution_checks_off() -> Iterator[None]:
    """torch.distributions without its per-call argument validation; with the checks if the default cannot be read."""
    previous = getattr(th.distributions.Distribution, VALIDATE_ARGS, None)
    if not isinstance(previous, bool):
        yield
        return
    th.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        th.distributions.Distribution.set_default_validate_args(previous)


def version_of(tensor: th.Tensor) -> int | None:
    """The tensor's in-place version counter, or None if torch has none to read (then nothing may be cached on it)."""
    version = getattr(tensor, VERSION, None)
    return version if isinstance(version, int) else None


def versions(tensors: Sequence[th.Tensor]) -> list[int]:
    """The tensors' in-place version counters, read at the cost of an attribute each (a cache's check every step);
    only for tensors whose counters :func:`version_of` has read."""
    return [tensor._version for tensor in tensors]


ParameterSlot = tuple[nn.Module, str, nn.Parameter, int]


def parameter_slots(module: nn.Module, params: Sequence[nn.Parameter]) -> list[ParameterSlot]:
    """
    Where each of ``params`` is registered: (owning module, attribute name, parameter, index in ``params``), for
    :func:`parameters_replaced`. Replacing a parameter in the module that owns it covers a features extractor shared
    by actor and critic under all its names.

    :raises PrivateApiChanged: when modules no longer keep their parameters where this looks
    """
    position = {id(param): index for index, param in enumerate(params)}
    slots = []
    for owner in module.modules():
        registered = getattr(owner, PARAMETERS, None)
        if not isinstance(registered, dict):
            raise PrivateApiChanged(f"nn.Module.{PARAMETERS} is not a dict in this torch")
        slots += [
            (owner, name, param, position[id(param)])
            for name, param in registered.items()
            if param is not None and id(param) in position
        ]
    return slots


@contextmanager
def parameters_replaced(slots: Sequence[ParameterSlot], tensors: Sequence[th.Tensor]) -> Iterator[None]:
    """Run the module with ``tensors`` (dual numbers, for forward-mode products) in place of its parameters."""
    for owner, name, _, index in slots:
        getattr(owner, PARAMETERS)[name] = tensors[index]
    try:
        yield
    finally:
        for owner, name, param, _ in slots:
            getattr(owner, PARAMETERS)[name] = param
