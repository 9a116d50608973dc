"""The critic's optimiser steps: hundreds per update, each on a small network, where the bookkeeping around
``optimizer.step()`` costs more than the step itself."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch as th
from torch.optim import optimizer as torch_optimizer

OptimizerStep = Callable[[Sequence[th.Tensor]], None]


@contextmanager
def optimizer_steps(optimizer: th.optim.Optimizer, params: Sequence[th.Tensor]) -> Iterator[OptimizerStep]:
    """
    A function that takes the gradients of ``params`` and makes ``optimizer``'s step with them, for the steps of one
    critic fit (nothing else may touch the optimiser's state meanwhile).

    For torch's fused Adam or AdamW (the critic's default) with one parameter group holding exactly ``params`` on one
    device and dtype, its state in place with one step count for all, a float learning rate and no step hooks, the
    step is the one fused kernel ``optimizer.step()`` runs, called on the optimiser's own state; the step count is
    kept in one tensor meanwhile and written back to every parameter's state on leaving. Any other optimiser gets the
    gradients as ``.grad`` and ``optimizer.step()``.
    """
    state = _fused_adam_state(optimizer, params)
    step_count = None if state is None else state.steps[0].clone()
    # An optimiser that has never stepped has no state yet: its first step creates it, then the kernel may take over.
    first_step = not any(param in optimizer.state for param in params)

    def step(grads: Sequence[th.Tensor]) -> None:
        nonlocal state, step_count, first_step
        if state is None:
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
            # The optimiser's state (created by its first step) must stay usable outside inference mode.
            with th.inference_mode(False):
                optimizer.step()
            if first_step:
                first_step = False
                state = _fused_adam_state(optimizer, params)
                step_count = None if state is None else state.steps[0].clone()
            return
        assert step_count is not None
        with th.no_grad():
            step_count.add_(1)
            state.kernel(
                state.params,
                list(grads),
                state.exp_avgs,
                state.exp_avg_sqs,
                state.max_exp_avg_sqs,
                # The same count for every parameter: one increment per step instead of one per parameter.
                [step_count] * len(state.params),
                **state.hyperparameters,
            )

    try:
        yield step
    finally:
        if state is not None and step_count is not None:
            with th.no_grad():
                for count in state.steps:
                    count.copy_(step_count)


class FusedAdamState(NamedTuple):
    kernel: Callable[..., Any]
    hyperparameters: dict[str, Any]
    params: list[th.Tensor]
    exp_avgs: list[th.Tensor]
    exp_avg_sqs: list[th.Tensor]
    max_exp_avg_sqs: list[th.Tensor]
    steps: list[th.Tensor]


def _fused_adam_state(optimizer: th.optim.Optimizer, params: Sequence[th.Tensor]) -> FusedAdamState | None:
    """
    The fused kernel, its hyperparameters (read once per fit: nothing changes them meanwhile) and the state tensors it
    updates; None where the kernel cannot stand for ``step()``.
    """
    hooks = (
        getattr(optimizer, "_optimizer_step_pre_hooks", None),
        getattr(optimizer, "_optimizer_step_post_hooks", None),
        getattr(torch_optimizer, "_global_optimizer_pre_hooks", None),
        getattr(torch_optimizer, "_global_optimizer_post_hooks", None),
    )
    if not (
        type(optimizer) in (th.optim.Adam, th.optim.AdamW)
        and hasattr(th, "_fused_adam_")
        and hasattr(th, "_fused_adamw_")
        and len(optimizer.param_groups) == 1
        and all(hook is not None and len(hook) == 0 for hook in hooks)
        and getattr(optimizer, "grad_scale", None) is None
        and getattr(optimizer, "found_inf", None) is None
    ):
        return None
    (group,) = optimizer.param_groups
    if not (
        group.get("fused")
        and "decoupled_weight_decay" in group
        and not group["differentiable"]
        and not group["capturable"]
        and isinstance(group["lr"], float)
        and [id(param) for param in group["params"]] == [id(param) for param in params]
        and all(param in optimizer.state for param in params)
        and len({(param.device, param.dtype) for param in params}) == 1
    ):
        return None
    states = [optimizer.state[param] for param in params]
    steps = [state["step"] for state in states]
    if len({(step.dtype, step.device, step.item()) for step in steps}) != 1:
        return None
    beta1, beta2 = group["betas"]
    return FusedAdamState(
        th._fused_adamw_ if group["decoupled_weight_decay"] else th._fused_adam_,
        dict(
            amsgrad=group["amsgrad"],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            grad_scale=None,
            found_inf=None,
        ),
        list(params),
        [state["exp_avg"] for state in states],
        [state["exp_avg_sq"] for state in states],
        [state["max_exp_avg_sq"] for state in states] if group["amsgrad"] else [],
        steps,
    )
