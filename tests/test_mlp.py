"""The layer-by-layer MLP networks against torch's modules and autograd, and the critic's Adam step."""

import copy

import numpy as np
import pytest
import torch as th
from helpers import ACTION_SPACES, ToyEnv, collect_rollout
from torch import nn

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.critic import NUMPY_MINIBATCH, NumpyMlpCritic, _fused_adam_state, optimizer_steps
from sb3_trpo_ext.fast_paths import FastPaths
from sb3_trpo_ext.mlp import actor_network, critic_network, mlp_network, tanh


def mlp(activation, bias=True, dtype=th.float64):
    th.manual_seed(0)
    layers = [nn.Linear(5, 7, bias=bias), activation(), nn.Linear(7, 4, bias=bias), activation(), nn.Linear(4, 3)]
    return nn.Sequential(*layers).to(dtype)


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU])
@pytest.mark.parametrize("bias", [True, False])
def test_products_equal_the_dense_jacobian(activation, bias):
    module = mlp(activation, bias)
    network = mlp_network([module])
    assert network is not None and len(network.parameters) == len(list(module.parameters()))
    x = th.randn(9, 5, dtype=th.float64)
    outputs = network.forward(x)
    if activation is nn.ReLU:
        assert th.equal(outputs[-1], module(x).detach())  # the same kernels: bit for bit
    else:  # numpy's tanh kernel: torch's to the last bit
        th.testing.assert_close(outputs[-1], module(x).detach(), rtol=1e-15, atol=1e-15)
    theta = th.cat([p.detach().reshape(-1) for p in network.parameters])
    sizes = [p.numel() for p in network.parameters]

    def output_of(vector):
        return th.func.functional_call(
            module,
            {
                name: chunk.view_as(param)
                for (name, param), chunk in zip(module.named_parameters(), vector.split(sizes), strict=True)
            },
            (x,),
        )

    jacobian = th.autograd.functional.jacobian(output_of, theta).reshape(-1, theta.numel())  # (9 * 3, P)
    v = th.randn(theta.numel(), dtype=th.float64)
    jv = network.jacobian_vector_product(
        outputs, [c.view_as(p) for c, p in zip(v.split(sizes), network.parameters, strict=True)]
    )
    assert th.allclose(jv.reshape(-1), jacobian @ v, rtol=1e-10, atol=1e-12)
    u = th.randn(9, 3, dtype=th.float64)
    vjp = th.cat([g.reshape(-1) for g in network.vector_jacobian_product(outputs, u)])
    assert th.allclose(vjp, jacobian.T @ u.reshape(-1), rtol=1e-10, atol=1e-12)
    # Called with autograd on (as here), none of them records a graph.
    assert not any(t.requires_grad for t in [*outputs, jv, *network.vector_jacobian_product(outputs, u)])


@pytest.mark.parametrize("dtype", [th.float32, th.float64])
def test_tanh_is_torch_s_to_rounding_and_writes_over_its_input(dtype):
    x = th.linspace(-12, 12, 4001, dtype=dtype).reshape(1, -1) ** 3
    expected, exact = th.tanh(x), th.tanh(x.double())
    result = tanh(x)
    assert result is x  # in place: the pre-activation is the caller's to give up
    ulp = th.finfo(dtype).eps * exact.abs().clamp(min=th.finfo(dtype).tiny)
    assert ((result.double() - exact).abs() <= ulp).all() and ((expected.double() - exact).abs() <= ulp).all()
    # Where numpy cannot take the tensor in place (a strided view, a graph), torch's tanh, untouched input.
    strided = th.randn(4, 6, dtype=dtype)[:, ::2]
    assert th.equal(tanh(strided), th.tanh(strided))
    leaf = th.randn(5, dtype=dtype, requires_grad=True)
    before = leaf.detach().clone()
    assert th.equal(tanh(leaf).detach(), th.tanh(before)) and th.equal(leaf.detach(), before)


class ShiftedLinear(nn.Linear):
    def forward(self, x):
        return super().forward(x) + 1.0


@pytest.mark.parametrize(
    "modules",
    [
        [nn.Linear(3, 4), nn.ELU(), nn.Linear(4, 2)],  # an activation without a rule here
        [nn.Linear(3, 4), nn.LayerNorm(4)],
        [ShiftedLinear(3, 4)],  # a subclass may compute something else
        [nn.Tanh()],  # an activation with no layer before it
        [],
    ],
)
def test_anything_but_linear_layers_and_known_activations_is_refused(modules):
    assert mlp_network(modules) is None


def test_policies_get_networks_only_where_they_hold_exactly_the_right_parameters():
    mlp_model = TRPO("MlpPolicy", ToyEnv(ACTION_SPACES["box3"]), n_steps=32, batch_size=32)
    actor = actor_network(mlp_model.policy, mlp_model._actor_params)
    critic = critic_network(mlp_model.policy, mlp_model._critic_params)
    assert actor is not None and critic is not None
    assert {id(p) for p in actor.parameters} | {id(mlp_model.policy.log_std)} == set(map(id, mlp_model._actor_params))
    # The shared CNN features extractor belongs to the actor: the actor is not an MLP of features, the critic is.
    cnn_model = TRPO("CnnPolicy", ToyEnv(ACTION_SPACES["discrete"], "image"), n_steps=32, batch_size=32)
    assert actor_network(cnn_model.policy, cnn_model._actor_params) is None
    assert critic_network(cnn_model.policy, cnn_model._critic_params) is not None
    sde_model = TRPO("MlpPolicy", ToyEnv(ACTION_SPACES["box3"]), n_steps=32, batch_size=32, use_sde=True)
    assert actor_network(sde_model.policy, sde_model._actor_params) is None  # the noise depends on the latent too


OPTIMIZERS = [
    (th.optim.Adam, dict(fused=True)),  # the critic's default: the fused kernel called directly
    (th.optim.Adam, dict(fused=True, amsgrad=True, weight_decay=0.1)),
    (th.optim.AdamW, dict(fused=True, weight_decay=0.1)),
    (th.optim.Adam, dict(foreach=True)),  # the others through optimizer.step()
    (th.optim.RMSprop, dict()),
]


@pytest.mark.parametrize("optimizer_class,kwargs", OPTIMIZERS)
def test_optimizer_steps_are_optimizer_step(optimizer_class, kwargs):
    module = mlp(nn.Tanh, dtype=th.float32)
    twin = copy.deepcopy(module)
    optimizers = [optimizer_class(m.parameters(), lr=1e-2, **kwargs) for m in (module, twin)]
    params = list(module.parameters())
    x = th.randn(16, 5)
    for fit in range(3):  # a critic fit at a time, the learning rate changed between fits as a schedule does
        with optimizer_steps(optimizers[0], params) as take_step:
            for _ in range(3):
                for m, optimizer in zip((module, twin), optimizers, strict=True):
                    grads = th.autograd.grad(m(x).square().mean(), list(m.parameters()))
                    if m is module:
                        take_step(grads)
                    else:
                        for param, grad in zip(m.parameters(), grads, strict=True):
                            param.grad = grad
                        optimizer.step()
        for optimizer in optimizers:
            optimizer.param_groups[0]["lr"] = 1e-2 / (fit + 2)
    for a, b in zip(module.parameters(), twin.parameters(), strict=True):
        assert th.equal(a, b)
    assert str(optimizers[0].state_dict()) == str(optimizers[1].state_dict())
    assert (_fused_adam_state(optimizers[0], params) is not None) == bool(kwargs.get("fused"))


def test_optimizer_steps_keep_unequal_step_counts():
    # A state whose parameters have taken different numbers of steps (an optimiser rebuilt around a larger
    # network, a state edited by hand) is stepped as optimizer.step() would, count for count.
    module = mlp(nn.Tanh, dtype=th.float32)
    twin = copy.deepcopy(module)
    optimizers = [th.optim.Adam(m.parameters(), lr=1e-2, fused=True) for m in (module, twin)]
    x = th.randn(16, 5)
    for m, optimizer in zip((module, twin), optimizers, strict=True):
        for param, grad in zip(m.parameters(), th.autograd.grad(m(x).square().mean(), list(m.parameters())), strict=True):
            param.grad = grad
        optimizer.step()
        optimizer.state[next(m.parameters())]["step"].fill_(7.0)
    with optimizer_steps(optimizers[0], list(module.parameters())) as take_step:
        take_step(th.autograd.grad(module(x).square().mean(), list(module.parameters())))
    for param, grad in zip(twin.parameters(), th.autograd.grad(twin(x).square().mean(), list(twin.parameters())), strict=True):
        param.grad = grad
    optimizers[1].step()
    for a, b in zip(module.parameters(), twin.parameters(), strict=True):
        assert th.equal(a, b)
    assert str(optimizers[0].state_dict()) == str(optimizers[1].state_dict())
    assert [float(state["step"]) for state in optimizers[0].state.values()][:2] == [8.0, 2.0]


def test_optimizer_steps_run_the_optimizer_s_hooks():
    module = mlp(nn.Tanh, dtype=th.float32)
    optimizer = th.optim.Adam(module.parameters(), fused=True)
    calls = []
    optimizer.register_step_post_hook(lambda *args: calls.append(1))
    with optimizer_steps(optimizer, list(module.parameters())) as take_step:
        for _ in range(3):
            take_step(th.autograd.grad(module(th.randn(4, 5)).sum(), list(module.parameters())))
    assert len(calls) == 3


def test_the_default_critic_takes_the_fused_kernel():
    model = TRPO("MlpPolicy", ToyEnv(ACTION_SPACES["box3"]), n_steps=32, batch_size=16, n_critic_updates=1)
    model.learn(64)
    assert model._speedups.critic is not None
    assert _fused_adam_state(model.policy.optimizer, model._speedups.critic.parameters) is not None


@pytest.mark.parametrize("optimizer_class", [th.optim.Adam, th.optim.SGD])
def test_the_critic_fit_leaves_tensors_autograd_can_use(optimizer_class):
    # The MLP fit runs in inference mode; the optimiser's state it creates and the parameters it updates must
    # remain ordinary tensors, usable by a later autograd step.
    optimizer_kwargs = dict(momentum=0.9) if optimizer_class is th.optim.SGD else {}
    kwargs = dict(optimizer_class=optimizer_class, optimizer_kwargs=optimizer_kwargs)
    model = TRPO(
        "MlpPolicy", ToyEnv(ACTION_SPACES["box3"]), n_steps=32, batch_size=16, n_critic_updates=2, policy_kwargs=kwargs
    )
    model.learn(64)
    assert model._speedups.critic is not None
    tensors = [
        value for state in model.policy.optimizer.state.values() for value in state.values() if isinstance(value, th.Tensor)
    ]
    assert tensors and not any(tensor.is_inference() for tensor in tensors)
    assert not any(param.is_inference() for param in model.policy.parameters())
    model.policy.optimizer.zero_grad()
    model.policy.predict_values(th.zeros(3, 4)).sum().backward()
    model.policy.optimizer.step()


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU])
@pytest.mark.parametrize("bias", [True, False])
def test_the_numpy_critic_step_is_autograd_s_gradient_of_the_squared_error(activation, bias):
    module = mlp(activation, bias)
    network = mlp_network([module])
    assert NumpyMlpCritic.takes(network, 9)
    critic = NumpyMlpCritic(network)
    x, returns = th.randn(9, 5, dtype=th.float64), th.randn(9, 3, dtype=th.float64)
    values = module(x)
    # d/dV of the minibatch mean of each output's squared error: a critic's 2 (V - R) / batch size, column by column.
    expected = th.autograd.grad(((values - returns) ** 2).mean(dim=0).sum(), network.parameters)
    taken = []
    for repeat in range(2):  # the second step reuses the arrays of the first
        got = critic.step(x, returns, lambda grads: taken.append([grad.clone() for grad in grads]))
        assert got == pytest.approx(((values - returns) ** 2).mean().item(), rel=1e-12)
        for grad, reference in zip(taken[repeat], expected, strict=True):
            th.testing.assert_close(grad, reference, rtol=1e-12, atol=1e-14)


def test_the_numpy_critic_follows_an_optimiser_that_replaces_the_parameters_memory():
    module = mlp(nn.Tanh)
    network = mlp_network([module])
    critic = NumpyMlpCritic(network)
    x, returns = th.randn(9, 5, dtype=th.float64), th.randn(9, 3, dtype=th.float64)

    def replace(grads):  # SGD that rebinds .data to new tensors instead of updating in place
        for param, grad in zip(network.parameters, grads, strict=True):
            param.data = param.data - 0.1 * grad

    critic.step(x, returns, replace)
    taken = []
    critic.step(x, returns, lambda grads: taken.append([grad.clone() for grad in grads]))
    expected = th.autograd.grad(((module(x) - returns) ** 2).mean(dim=0).sum(), network.parameters)
    for grad, reference in zip(taken[0], expected, strict=True):
        th.testing.assert_close(grad, reference, rtol=1e-12, atol=1e-14)


def test_the_numpy_critic_fit_runs_numpy_s_blas_on_torch_s_thread_count(monkeypatch):
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    if not controller.select(user_api="blas"):
        pytest.skip("numpy's BLAS is one threadpoolctl does not know")
    model = TRPO("MlpPolicy", ToyEnv(ACTION_SPACES["box3"]), n_steps=64, batch_size=16, n_critic_updates=1, seed=0)
    collect_rollout(model)
    seen = []
    step = NumpyMlpCritic.step

    def counting_step(self, *args):
        seen.append({pool.num_threads for pool in ThreadpoolController().select(user_api="blas").lib_controllers})
        return step(self, *args)

    monkeypatch.setattr(NumpyMlpCritic, "step", counting_step)
    assert th.get_num_threads() == 1  # the tests' setting (conftest.py)
    with controller.limit(limits=2, user_api="blas"):  # as OpenBLAS sets itself on a 2-core machine
        model._fit_critic()
        assert {pool.num_threads for pool in ThreadpoolController().select(user_api="blas").lib_controllers} == {2}
    assert seen and all(threads == {1} for threads in seen)


def test_the_numpy_critic_takes_only_cpu_float_parameters_of_one_dtype():
    assert NumpyMlpCritic.takes(mlp_network([mlp(nn.Tanh, dtype=th.float32)]), NUMPY_MINIBATCH)
    assert not NumpyMlpCritic.takes(mlp_network([mlp(nn.Tanh, dtype=th.float32)]), NUMPY_MINIBATCH + 1)
    assert not NumpyMlpCritic.takes(mlp_network([mlp(nn.Tanh, dtype=th.bfloat16)]), 16)
    mixed = mlp(nn.ReLU, dtype=th.float32)
    mixed[-1].to(th.float64)
    assert not NumpyMlpCritic.takes(mlp_network([mixed]), 16)


@pytest.mark.parametrize("critic_step", ["numpy", "torch"])
@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh])
@pytest.mark.parametrize("reference_paths", ["autograd critic", "fast paths off"])
@pytest.mark.parametrize("space,optimizer_class", [("box3", th.optim.Adam), ("discrete", th.optim.SGD)])
def test_the_mlp_critic_takes_autograd_s_steps(space, optimizer_class, reference_paths, activation, critic_step, monkeypatch):
    if critic_step == "torch":  # the MLP critic's torch kernels, as on an accelerator
        monkeypatch.setattr(NumpyMlpCritic, "takes", staticmethod(lambda network, batch_size: False))
    # SGD's steps are proportional to the gradient, so a wrong scale of it shows (Adam's steps would not).
    kwargs = dict(net_arch=dict(pi=[8], vf=[8, 8]), activation_fn=activation, optimizer_class=optimizer_class)
    model = TRPO(
        "MlpPolicy",
        ToyEnv(ACTION_SPACES[space]),
        n_steps=64,
        batch_size=16,
        n_critic_updates=3,
        learning_rate=1e-2,
        policy_kwargs=kwargs,
        seed=2,
    )
    collect_rollout(model)
    next(model.rollout_buffer.get(batch_size=None))
    reference = copy.deepcopy(model)
    # The fast path's autograd critic (resident minibatches), or SB3's and torch's public API alone.
    reference._speedups = FastPaths(True) if reference_paths == "autograd critic" else FastPaths(False)
    assert model._speedups.critic is not None
    assert NumpyMlpCritic.takes(model._speedups.critic, model.batch_size) == (critic_step == "numpy")
    losses = []
    for critic in (model, reference):
        th.manual_seed(0)
        np.random.seed(0)
        losses.append(critic._fit_critic())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for a, b in zip(model._critic_params, reference._critic_params, strict=True):
        assert th.allclose(a, b, rtol=1e-5, atol=1e-6)
    start = TRPO("MlpPolicy", ToyEnv(ACTION_SPACES[space]), n_steps=64, batch_size=16, policy_kwargs=kwargs, seed=2)
    moved = sum((a - b).abs().sum() for a, b in zip(model._critic_params, start._critic_params, strict=True))
    assert moved > 1e-3  # 12 steps of lr 1e-2 moved the critic
