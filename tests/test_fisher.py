import copy

import numpy as np
import pytest
import torch as th
from helpers import ACTION_SPACES, DenseProblem, ToyEnv, reference_kl
from stable_baselines3.common.distributions import DiagGaussianDistribution
from torch import nn

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.fisher import fisher_vector_product, kl_divergence
from sb3_trpo_ext.mlp import actor_network
from sb3_trpo_ext.policies import PolicyInputs

CASES = [(name, False) for name in ACTION_SPACES] + [("box3", True)]  # the last one is gSDE


def tiny_model(action_space, use_sde=False, activation_fn=nn.Tanh, **kwargs):
    return TRPO(
        "MlpPolicy",
        ToyEnv(action_space),
        n_steps=32,
        batch_size=32,
        use_sde=use_sde,
        policy_kwargs=dict(net_arch=dict(pi=[6, 5], vf=[6]), log_std_init=-0.3, activation_fn=activation_fn),
        seed=3,
        **kwargs,
    )


def batch_of_states(model, n=24):
    model.observation_space.seed(7)
    obs = np.stack([model.observation_space.sample() for _ in range(n)])
    return model.policy.obs_to_tensor(obs)[0]


def perturb(model, scale=0.3):
    """Move away from the initialisation so that probabilities are uneven and every term matters."""
    gen = th.Generator().manual_seed(0)
    with th.no_grad():
        for p in model.policy.parameters():
            p.add_(scale * th.randn(p.shape, generator=gen))


def dense_problem(model):
    obs = batch_of_states(model)
    with th.no_grad():
        actions = model.policy.get_distribution(obs).sample()
    return DenseProblem(model.policy, model._actor_params, obs, actions, th.randn(len(actions)))


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


#: The analytic product runs layer by layer for tanh and ReLU MLPs, through forward-mode AD for other actors (ELU).
ACTORS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


@pytest.mark.parametrize("fast_paths", [True, False])
@pytest.mark.parametrize("space,use_sde", CASES)
@pytest.mark.parametrize(
    "method,actor", [("analytic", "tanh"), ("analytic", "relu"), ("analytic", "elu"), ("autograd", "tanh")]
)
def test_fisher_vector_product_equals_dense_hessian_of_mean_kl(space, use_sde, method, actor, fast_paths):
    if use_sde and method == "analytic":
        pytest.skip("gSDE uses double backprop")
    model = tiny_model(ACTION_SPACES[space], use_sde, activation_fn=ACTORS[actor], fast_paths=fast_paths)
    assert (actor_network(model.policy, model._actor_params) is None) == (actor == "elu" or use_sde)
    # The layer-by-layer products on the fast paths, forward-mode AD and autograd off them.
    mlp_actor = model._speedups.actor
    assert (mlp_actor is not None) == (fast_paths and actor != "elu" and not use_sde)
    perturb(model)
    problem = dense_problem(model)
    hessian = problem.fisher()
    fvp = fisher_vector_product(
        model.policy, PolicyInputs(problem.observations), model._actor_params, method, network=mlp_actor
    )
    gen = th.Generator().manual_seed(1)
    for _ in range(3):
        v = th.randn(problem.theta0.numel(), generator=gen)
        assert relative_error(fvp(v), hessian @ v) < 1e-5


@pytest.mark.parametrize("method", ["analytic", "autograd"])
def test_damping_is_added(method):
    model = tiny_model(ACTION_SPACES["box3"])
    problem = dense_problem(model)
    v = th.randn(problem.theta0.numel())
    plain = fisher_vector_product(model.policy, PolicyInputs(problem.observations), model._actor_params, method)
    damped = fisher_vector_product(model.policy, PolicyInputs(problem.observations), model._actor_params, method, damping=0.5)
    th.testing.assert_close(damped(v), plain(v) + 0.5 * v)


def test_analytic_refuses_gsde():
    model = tiny_model(ACTION_SPACES["box3"], use_sde=True)
    with pytest.raises(ValueError, match="analytic"):
        fisher_vector_product(model.policy, PolicyInputs(batch_of_states(model)), model._actor_params, "analytic")
    with pytest.raises(ValueError, match="fvp_method"):
        tiny_model(ACTION_SPACES["box3"], use_sde=True, fvp_method="analytic")
    with pytest.raises(ValueError, match="fvp_method"):
        fisher_vector_product(model.policy, PolicyInputs(batch_of_states(model)), model._actor_params, "exact")


@pytest.mark.parametrize("space,use_sde", CASES)
def test_kl_is_summed_over_action_dimensions(space, use_sde):
    model = tiny_model(ACTION_SPACES[space], use_sde)
    obs = batch_of_states(model)
    with th.no_grad():
        old = copy.copy(model.policy.get_distribution(obs))
        perturb(model, 0.1)
        new = model.policy.get_distribution(obs)
    kl = kl_divergence(old, new)
    assert kl.shape == (len(obs),)
    th.testing.assert_close(kl, reference_kl(old, new), rtol=1e-4, atol=1e-7)
    assert (kl > 0).all()


def test_kl_of_independent_gaussian_dimensions_adds_up():
    """A shift of one std in each of A dimensions costs A/2 nats: the true KL, not the per-dimension mean."""
    for n_dims in (1, 3, 6):
        old = DiagGaussianDistribution(n_dims).proba_distribution(th.zeros(5, n_dims), th.zeros(n_dims))
        old = copy.copy(old)
        new = DiagGaussianDistribution(n_dims).proba_distribution(th.ones(5, n_dims), th.zeros(n_dims))
        th.testing.assert_close(kl_divergence(old, new), th.full((5,), n_dims / 2))


def test_shared_cnn_extractor_products_agree_and_parameters_stay_in_place():
    """CnnPolicy shares its features extractor under several names; the analytic product must still see it
    as one parameter and leave the policy's own Parameter objects in place."""
    model = TRPO("CnnPolicy", ToyEnv(ACTION_SPACES["discrete"], "image"), n_steps=32, batch_size=32, seed=0)
    obs = batch_of_states(model, n=8)
    parameters_before = list(model.policy.parameters())
    v = th.randn(sum(p.numel() for p in model._actor_params))
    analytic = fisher_vector_product(model.policy, PolicyInputs(obs), model._actor_params, "analytic")(v)
    autograd = fisher_vector_product(model.policy, PolicyInputs(obs), model._actor_params, "autograd")(v)
    assert relative_error(analytic, autograd) < 1e-5
    assert all(a is b for a, b in zip(model.policy.parameters(), parameters_before, strict=True))
    assert all(isinstance(p, th.nn.Parameter) for p in model.policy.parameters())
