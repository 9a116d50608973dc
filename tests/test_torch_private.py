"""Each use of torch's private API falls back to the public route when torch changes it: slower, as exact."""

import copy

import numpy as np
import pytest
import torch as th
from helpers import ACTION_SPACES, DenseProblem, ToyEnv
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from test_rollouts import CASES, rollouts
from torch import nn

import sb3_trpo_ext.critic
import sb3_trpo_ext.torch_private as private
from sb3_trpo_ext import TRPO
from sb3_trpo_ext.critic import _fused_adam_state, optimizer_steps
from sb3_trpo_ext.fisher import fisher_vector_product
from sb3_trpo_ext.policies import PolicyInputs


def steps_match_optimizer_step():
    """Three fused-Adam steps through optimizer_steps, and the same by optimizer.step(): parameters and states."""
    th.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 1))
    twin = copy.deepcopy(module)
    optimizers = [th.optim.Adam(m.parameters(), lr=1e-2, fused=True) for m in (module, twin)]
    x = th.randn(16, 5)
    for m, optimizer in zip((module, twin), optimizers, strict=True):  # the first step creates the state
        m(x).square().mean().backward()
        optimizer.step()
    params = list(module.parameters())
    with optimizer_steps(optimizers[0], params) as take_step:
        for _ in range(3):
            take_step(th.autograd.grad(module(x).square().mean(), params))
            twin.zero_grad()
            twin(x).square().mean().backward()
            optimizers[1].step()
    assert all(th.equal(a, b) for a, b in zip(module.parameters(), twin.parameters(), strict=True))
    assert str(optimizers[0].state_dict()) == str(optimizers[1].state_dict())
    return optimizers[0], params


def test_the_fused_kernel_is_taken_where_torch_has_it():
    optimizer, params = steps_match_optimizer_step()
    assert _fused_adam_state(optimizer, params) is not None


@pytest.mark.parametrize("change", ["absent", "other signature", "hooks renamed"])
def test_optimizer_steps_without_the_kernel_are_optimizer_step(monkeypatch, change):
    if change == "absent":
        monkeypatch.setattr(private, "FUSED_ADAM", "_no_such_kernel")
    elif change == "other signature":

        def kernel(*args, **kwargs):
            raise TypeError("_fused_adam_() got an unexpected keyword argument 'beta1'")

        # Only the kernel this package calls changes: torch's own fused Adam step still needs the real one.
        monkeypatch.setattr(sb3_trpo_ext.critic, "fused_adam_kernel", lambda decoupled_weight_decay: kernel)
    else:
        monkeypatch.setattr(private, "OPTIMIZER_HOOKS", ("_no_such_hooks", "_optimizer_step_post_hooks"))
    steps_match_optimizer_step()


def test_activation_chain_rules_without_autograd_s_kernels(monkeypatch):
    monkeypatch.setattr(private, "TANH_BACKWARD", "no_such_op")
    monkeypatch.setattr(private, "THRESHOLD_BACKWARD", "no_such_op")
    x = th.randn(50, dtype=th.float64, requires_grad=True)
    grad = th.randn(50, dtype=th.float64)
    for activation, rule in ((th.tanh, private.tanh_chain_rule()), (th.relu, private.relu_chain_rule())):
        assert rule not in (th.ops.aten.tanh_backward,)
        y = activation(x)
        (expected,) = th.autograd.grad(y, x, grad)
        th.testing.assert_close(rule(grad, y.detach()), expected)


def test_rollout_without_the_validation_default_and_version_counter(monkeypatch):
    monkeypatch.setattr(private, "VALIDATE_ARGS", "_no_such_default")
    monkeypatch.setattr(private, "VERSION", "_no_such_counter")
    sb3, _, _ = rollouts(OnPolicyAlgorithm.collect_rollouts, *CASES["box3"], widen_every=5)
    ours, _, _ = rollouts(TRPO.collect_rollouts, *CASES["box3"], widen_every=5)
    for field in ("actions", "log_probs", "values"):  # the same draws; tanh from numpy's kernel, to float rounding
        np.testing.assert_allclose(getattr(ours.rollout_buffer, field), getattr(sb3.rollout_buffer, field), rtol=0, atol=1e-6)


def test_fisher_products_without_parameter_substitution(monkeypatch):
    # A CNN actor takes the forward-mode route, which swaps parameters in place; without it, double backprop.
    model = TRPO("CnnPolicy", ToyEnv(ACTION_SPACES["discrete"], "image"), n_steps=32, batch_size=32, seed=0)
    observations = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(6)])).float()
    problem = DenseProblem(model.policy, model._actor_params, observations, th.zeros(6, dtype=th.long), th.zeros(6))
    v = th.randn(problem.theta0.numel())
    expected = fisher_vector_product(model.policy, PolicyInputs(observations), model._actor_params, "autograd")(v)
    monkeypatch.setattr(private, "PARAMETERS", "_no_such_registry")
    with pytest.raises(private.PrivateApiChanged):
        private.parameter_slots(model.policy, model._actor_params)
    product = fisher_vector_product(model.policy, PolicyInputs(observations), model._actor_params, "analytic")(v)
    th.testing.assert_close(product, expected)
