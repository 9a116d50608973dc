"""
The critic's fit (docs/algorithm.md §7): ``n_critic_updates`` epochs of minibatch regression of the value on the
returns, by the critic's own optimiser over the critic's own parameters.

The fast path cuts the minibatches ``RolloutBuffer.get`` yields from tensors made once, differentiates an MLP critic
layer by layer (:mod:`sb3_trpo_ext.mlp`; small minibatches in numpy on the CPU) and makes fused Adam's steps directly
on the optimiser's state: a fit is hundreds of steps on a small network, where the bookkeeping around
``optimizer.step()`` costs more than the step.
The plain path goes through ``RolloutBuffer.get``, autograd and ``optimizer.step()``; both take the same steps.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache, partial
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from threadpoolctl import ThreadpoolController
from torch.nn import functional as F

from sb3_trpo_ext.mlp import NUMPY_ACTIVATIONS, MlpNetwork, critic_features
from sb3_trpo_ext.policies import map_observations, per_sample
from sb3_trpo_ext.torch_private import fused_adam_kernel, has_no_step_hooks

Minibatches = Iterator[tuple[PyTorchObs, th.Tensor]]


def critic_optimizer(
    policy: ActorCriticPolicy, critic_params: Sequence[th.Tensor], learning_rate: float, fused: bool
) -> th.optim.Optimizer:
    """The policy's optimiser class and options over the critic's parameters only; Adam fused if ``fused``."""
    optimizer_kwargs = dict(policy.optimizer_kwargs)
    is_adam = policy.optimizer_class in (th.optim.Adam, th.optim.AdamW)
    if fused and is_adam and not {"fused", "foreach"} & set(optimizer_kwargs):
        # One fused kernel per step instead of a dozen small ones: the critic takes hundreds of small steps
        # per update (measured: about a quarter less time in the critic fit).
        optimizer_kwargs["fused"] = True
    # Every torch optimiser takes lr.
    return policy.optimizer_class(critic_params, lr=learning_rate, **optimizer_kwargs)  # type: ignore[call-arg]


def fit_critic(
    policy: ActorCriticPolicy,
    critic_params: Sequence[th.Tensor],
    buffer: RolloutBuffer,
    n_epochs: int,
    batch_size: int,
    network: MlpNetwork | None,
    resident: bool,
) -> float | None:
    """
    Fit the value function; the mean minibatch loss, or None when no minibatch was fitted.

    :param policy: the actor-critic policy, whose ``optimizer`` holds ``critic_params`` only
    :param critic_params: the parameters the critic trains
    :param buffer: the rollout
    :param n_epochs: passes over the batch
    :param batch_size: minibatch size
    :param network: the critic as an MLP network (features -> value), taken with ``resident``; or None
    :param resident: cut the minibatches from tensors made once (with ``network``, layer-by-layer gradients and the
        optimiser's steps on its state); else ``buffer.get(batch_size)`` and autograd
    """
    if not critic_params:
        return None
    minibatches: Minibatches
    if resident and network is not None:
        minibatches = resident_minibatches(buffer, n_epochs, batch_size, lambda obs: critic_features(policy, obs))
        numpy_steps = NumpyMlpCritic.takes(network, batch_size)
        step = NumpyMlpCritic(network).step if numpy_steps else partial(mlp_critic_step, network)
        # Inference mode: no autograd bookkeeping on the hundreds of small tensors a fit makes.
        with (
            optimizer_steps(policy.optimizer, network.parameters) as take_step,
            th.inference_mode(),
            blas_threads_as_torch_s() if numpy_steps else nullcontext(),
        ):
            losses = [step(features, returns, take_step) for features, returns in minibatches]  # type: ignore[arg-type]
    else:
        minibatches = (
            resident_minibatches(buffer, n_epochs, batch_size)
            if resident
            else ((data.observations, data.returns.reshape(-1, 1)) for _ in range(n_epochs) for data in buffer.get(batch_size))
        )
        losses = [autograd_critic_step(policy, critic_params, observations, returns) for observations, returns in minibatches]
    return th.stack(losses).mean().item() if losses else None


def fit_sequence_critic(
    policy: Any, critic_params: Sequence[th.Tensor], buffer: Any, n_epochs: int, batch_size: int
) -> float | None:
    """
    The fit of a recurrent policy's critic (a ``RecurrentActorCriticPolicy`` and sb3-contrib's recurrent buffer): each
    minibatch is whole sequences as the buffer cuts them, each run from the LSTM states of its rollout and reset at
    episode starts; the padding the buffer adds is left out of the loss. The mean minibatch loss, or None.
    """
    if not critic_params:
        return None
    losses = []
    for _ in range(n_epochs):
        for data in buffer.get(batch_size):
            real = data.mask > 1e-8
            values = policy.predict_values(data.observations, data.lstm_states.vf, data.episode_starts).flatten()
            loss = F.mse_loss(data.returns[real], values[real])
            policy.optimizer.zero_grad()
            loss.backward(inputs=list(critic_params))
            policy.optimizer.step()
            losses.append(loss.detach())
    return th.stack(losses).mean().item() if losses else None


def autograd_critic_step(
    policy: ActorCriticPolicy, critic_params: Sequence[th.Tensor], observations: PyTorchObs, returns: th.Tensor
) -> th.Tensor:
    """One minibatch step of mean((V - R)^2) by autograd and ``optimizer.step()``; the loss."""
    loss = F.mse_loss(returns, policy.predict_values(observations))
    policy.optimizer.zero_grad()
    # Gradients only where the critic trains: nothing accumulates in (shared) actor parameters.
    loss.backward(inputs=list(critic_params))
    policy.optimizer.step()
    return loss.detach()


def mlp_critic_step(network: MlpNetwork, features: th.Tensor, returns: th.Tensor, take_step: "OptimizerStep") -> th.Tensor:
    """The same step as :func:`autograd_critic_step` for an MLP critic, its gradient computed layer by layer."""
    outputs = network.forward(features)
    residual = outputs[-1] - returns
    # d/dV of mean((V - R)^2) = 2 (V - R) / batch size
    take_step(network.vector_jacobian_product(outputs, residual * (2.0 / returns.shape[0])))
    return residual.square().mean()


#: The largest minibatch the critic's numpy step takes. Up to 128 samples it took about 0.8x the time of torch's
#: kernels on a 2-core EPYC (one thread each); from 256 on, about as long for tanh and longer for ReLU.
NUMPY_MINIBATCH = 128


class NumpyMlpCritic:
    """
    :func:`mlp_critic_step` in numpy, for an MLP critic whose parameters are CPU arrays: the same arithmetic (the
    chain rules as autograd's kernels compute them, numpy's matrix products and tanh), equal to rounding. A step is
    about 20 numpy calls on arrays allocated once per minibatch size. Its torch form is about 20 kernels whose dispatch
    costs as much as their arithmetic on a minibatch of 128 (docs/performance.md has the times). The weights are numpy
    views of the parameters, which optimisers update in place; the gradients are arrays the optimiser reads as tensors.
    """

    def __init__(self, network: MlpNetwork) -> None:
        self.network, self.params = network, network.parameters
        self._read_weights()
        self.dtype = self.layers[0][0].dtype
        # Tensors made outside inference mode: an optimiser keeps them as its parameters' .grad.
        with th.inference_mode(False):
            self.grad_tensors = [th.empty_like(param, memory_format=th.contiguous_format) for param in self.params]
        # Backpropagation writes them from the last layer's back to the first's.
        self.grads_backwards = [grad.numpy() for grad in self.grad_tensors][::-1]
        self.buffers: dict[int, tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray]] = {}

    def _read_weights(self) -> None:
        """Each layer's weight, bias and activation kernel, the first two as numpy views of the parameters' memory."""
        self.layers = [
            (
                layer.weight.detach().numpy(),
                None if layer.bias is None else layer.bias.detach().numpy(),
                NUMPY_ACTIVATIONS[layer.activation],
            )
            for layer in self.network.layers
        ]
        self.memory = [param.data_ptr() for param in self.params]

    @staticmethod
    def takes(network: MlpNetwork, batch_size: int) -> bool:
        """Whether the critic's parameters are contiguous float32 or float64 CPU tensors of one dtype, its activations
        have numpy kernels, and minibatches of ``batch_size`` are small enough for numpy's step to be the faster."""
        params = network.parameters
        return (
            batch_size <= NUMPY_MINIBATCH
            and all(param.device.type == "cpu" and param.is_contiguous() for param in params)
            and len({param.dtype for param in params}) == 1
            and params[0].dtype in (th.float32, th.float64)
            and all(layer.activation in NUMPY_ACTIVATIONS for layer in network.layers)
        )

    def step(self, features: th.Tensor, returns: th.Tensor, take_step: "OptimizerStep") -> th.Tensor:
        """:func:`mlp_critic_step` on a minibatch; the loss."""
        if [param.data_ptr() for param in self.params] != self.memory:  # an optimiser that set .data
            self._read_weights()
        inputs = features.numpy().astype(self.dtype, copy=False)
        outputs, d_inputs, slopes, ones = self._buffers(len(inputs))
        xs = [inputs]
        for (weight, bias, activation), out in zip(self.layers, outputs, strict=True):
            np.matmul(xs[-1], weight.T, out=out)
            if bias is not None:
                out += bias
            if activation is not None:
                activation(out, out=out)
            xs.append(out)
        residual = np.subtract(xs[-1], returns.numpy(), out=d_inputs[-1])
        loss = th.from_numpy(np.asarray(np.vdot(residual, residual) / residual.size))
        # d/dV of mean((V - R)^2) = 2 (V - R) / batch size, then backpropagation through the stored outputs.
        d_x = np.multiply(residual, 2.0 / len(inputs), out=residual)
        grads = iter(self.grads_backwards)
        for index in range(len(self.layers) - 1, -1, -1):
            weight, bias, activation = self.layers[index]
            if activation is not None:
                _chain_rule(activation, d_x, xs[index + 1], slopes[index])
            if bias is not None:
                np.matmul(ones, d_x, out=next(grads))
            np.matmul(d_x.T, xs[index], out=next(grads))
            if index > 0:
                d_x = np.matmul(d_x, weight, out=d_inputs[index - 1])
        take_step(self.grad_tensors)
        return loss

    def _buffers(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray]:
        """For ``n`` inputs: each layer's outputs, their gradients, room for its activation's slope, and n ones (a
        bias's gradient is 1ᵀ g)."""
        if n not in self.buffers:
            outputs = [np.empty((n, len(weight)), self.dtype) for weight, _, _ in self.layers]
            self.buffers[n] = (
                outputs, [np.empty_like(out) for out in outputs], [np.empty_like(out) for out in outputs],
                np.ones(n, self.dtype),
            )  # fmt: skip
        return self.buffers[n]


@cache
def _thread_pools() -> ThreadpoolController:
    return ThreadpoolController()


def blas_threads_as_torch_s() -> AbstractContextManager:
    """
    numpy's BLAS limited to torch's thread count meanwhile: one setting for both. Left alone, OpenBLAS splits a large
    product (a 512-sample minibatch of a 64-unit layer; a wider layer on fewer) over every core, for no gain in time
    here, and takes the cores of other runs.
    """
    return _thread_pools().limit(limits=th.get_num_threads(), user_api="blas")


def _chain_rule(activation: Callable[..., np.ndarray], grad: np.ndarray, output: np.ndarray, slope: np.ndarray) -> None:
    """grad *= act'(x) in place, from the output y = act(x), as autograd's kernels compute it: g (1 - y^2) for tanh,
    g [y > 0] for ReLU. ``slope`` is room for act'(x)."""
    if activation is np.tanh:
        np.multiply(output, output, out=slope)
        np.subtract(1, slope, out=slope)
    else:
        # A product with the 0/1 indicator rather than a masked write, whose branch per entry costs several times as much.
        np.greater(output, 0, out=slope)
    np.multiply(grad, slope, out=grad)


def resident_minibatches(
    buffer: RolloutBuffer, n_epochs: int, batch_size: int, features: Callable[[PyTorchObs], th.Tensor] | None = None
) -> Minibatches:
    """
    The minibatches ``buffer.get(batch_size)`` yields, epoch after epoch, from the same random permutations, but cut
    by index from tensors made once instead of copied out of numpy each time. With ``features``, the inputs are the
    observations' features rather than the observations: the layers before the critic do not train here.
    """
    observations = map_observations(per_sample(buffer), buffer.observations)
    if features is not None:
        observations = features(observations)
    # A column, as the critic's output: (n_samples, 1).
    returns = per_sample(buffer)(buffer.returns).reshape(-1, 1)
    n_samples = len(returns)
    for _ in range(n_epochs):
        # One gather per epoch; its consecutive slices are then the minibatches, without copies.
        order = th.as_tensor(np.random.permutation(n_samples), device=returns.device)
        shuffled = map_observations(itemgetter(order), observations)
        shuffled_returns = returns[order]
        for start in range(0, n_samples, batch_size):
            end = start + batch_size
            yield map_observations(itemgetter(slice(start, end)), shuffled), shuffled_returns[start:end]


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

    def kernel_step(grads: Sequence[th.Tensor]) -> bool:
        """The fused kernel's step; False, with the step counts written back, if the kernel refuses its arguments."""
        nonlocal state
        assert state is not None and step_count is not None
        with th.no_grad():
            step_count.add_(1)
            try:
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
                return True
            except TypeError:  # a torch whose kernel takes other arguments: optimizer.step() from here on
                step_count.sub_(1)
                for count in state.steps:
                    count.copy_(step_count)
                state = None
                return False

    def step(grads: Sequence[th.Tensor]) -> None:
        nonlocal state, step_count, first_step
        if state is not None and kernel_step(grads):
            return
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        # The optimiser's state (created by its first step) must stay usable outside inference mode.
        with th.inference_mode(False):
            optimizer.step()
        if first_step:
            first_step = False
            state = _fused_adam_state(optimizer, params)
            step_count = None if state is None else state.steps[0].clone()

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
    if not (
        type(optimizer) in (th.optim.Adam, th.optim.AdamW)
        and len(optimizer.param_groups) == 1
        and has_no_step_hooks(optimizer)
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
    kernel = fused_adam_kernel(group["decoupled_weight_decay"])
    if kernel is None:
        return None
    beta1, beta2 = group["betas"]
    return FusedAdamState(
        kernel,
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
