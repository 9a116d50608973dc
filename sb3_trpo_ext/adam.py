"""Adam steps for the critic, which takes hundreds of small minibatch steps per update."""

import torch as th
from torch.optim import optimizer as torch_optimizer
from torch.optim.adam import adam as _functional_adam


def adam_step(optimizer: th.optim.Optimizer) -> None:
    """
    ``optimizer.step()``. For torch's Adam or AdamW with one parameter group, whose state exists (after its first
    step) and with no step hooks, the update is handed straight to torch's functional ``adam`` with the group's
    hyperparameters: the same kernels and state, without Optimizer.step's per-call bookkeeping (about half the time
    of a fused step on a small network).
    """
    if not _is_plain_adam(optimizer):
        optimizer.step()
        return
    (group,) = optimizer.param_groups
    params = [param for param in group["params"] if param.grad is not None]
    states = [optimizer.state[param] for param in params]
    beta1, beta2 = group["betas"]
    with th.no_grad():  # as Optimizer.step: the update is not part of any graph
        _functional_adam(
            params,
            [param.grad for param in params],  # type: ignore[misc]
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [state["max_exp_avg_sq"] for state in states] if group["amsgrad"] else [],
            [state["step"] for state in states],
            foreach=group["foreach"],
            capturable=group["capturable"],
            differentiable=group["differentiable"],
            fused=group["fused"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            amsgrad=group["amsgrad"],
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )


def _is_plain_adam(optimizer: th.optim.Optimizer) -> bool:
    hooks = (
        getattr(optimizer, "_optimizer_step_pre_hooks", None),
        getattr(optimizer, "_optimizer_step_post_hooks", None),
        getattr(torch_optimizer, "_global_optimizer_pre_hooks", None),
        getattr(torch_optimizer, "_global_optimizer_post_hooks", None),
    )
    return (
        type(optimizer) in (th.optim.Adam, th.optim.AdamW)
        and len(optimizer.param_groups) == 1
        and getattr(optimizer, "grad_scale", None) is None
        and getattr(optimizer, "found_inf", None) is None
        and all(hook is not None and len(hook) == 0 for hook in hooks)
        and "decoupled_weight_decay" in optimizer.param_groups[0]
        and all(param in optimizer.state for param in optimizer.param_groups[0]["params"])
        and not any(th.is_complex(param) for param in optimizer.param_groups[0]["params"])
    )
