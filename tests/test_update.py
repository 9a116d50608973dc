"""One whole TRPO update against the dense computation, exact restoration, covariance, and the critic."""

import copy
import warnings

import numpy as np
import pytest
import sb3_contrib
import torch as th
from helpers import ACTION_SPACES, DENSE_SETTINGS, DenseProblem, ToyEnv, collect_rollout
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.logger import configure
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

import sb3_trpo_ext.critic
import sb3_trpo_ext.fast_paths
import sb3_trpo_ext.fisher
import sb3_trpo_ext.line_search
import sb3_trpo_ext.mlp
import sb3_trpo_ext.rollout
from sb3_trpo_ext import TRPO
from sb3_trpo_ext.critic import resident_minibatches
from sb3_trpo_ext.fisher import flat_grad, kl_averaged_dimensions, kl_divergence
from sb3_trpo_ext.line_search import Candidate, backtracking_line_search
from sb3_trpo_ext.mlp import critic_features
from sb3_trpo_ext.policies import flat_parameters, set_flat_parameters
from sb3_trpo_ext.surrogate import normalize_advantages, surrogate_objective
from sb3_trpo_ext.update import distribution_actions, max_step_size

TARGET_KL = 0.01


def model_with_rollout(action_space, policy="MlpPolicy", observation="vector", **kwargs):
    settings = {**DENSE_SETTINGS, "target_kl": TARGET_KL, **kwargs}
    model = TRPO(policy, ToyEnv(action_space, observation), **settings)
    collect_rollout(model)
    return model


def whole_batch(model):
    batch = next(model.rollout_buffer.get(batch_size=None))
    return batch.observations, distribution_actions(batch.actions, model.action_space), normalize_advantages(batch.advantages)


@pytest.mark.parametrize("fast_paths", [True, False])
@pytest.mark.parametrize("space", list(ACTION_SPACES))
def test_update_is_the_dense_trpo_step(space, fast_paths):
    model = model_with_rollout(ACTION_SPACES[space], fast_paths=fast_paths)
    problem = DenseProblem(model.policy, model._actor_params, *whole_batch(model))
    kl_after = problem.assert_update_is_the_dense_step(model)
    assert 0 < kl_after <= TARGET_KL
    assert model.logger.name_to_value["train/kl_divergence"] == pytest.approx(kl_after, rel=1e-3)


def contrib_and_own_step(space, damping, target_kl, contrib_damping=0.1, contrib_target_kl=0.01):
    """One update by sb3-contrib's TRPO and one by this TRPO from the same parameters and the same rollout."""
    settings = dict(
        n_steps=256,
        batch_size=256,
        policy_kwargs=dict(net_arch=dict(pi=[16], vf=[16])),
        cg_max_steps=300,
        n_critic_updates=1,
        seed=3,
    )
    contrib = sb3_contrib.TRPO("MlpPolicy", ToyEnv(space), cg_damping=contrib_damping, target_kl=contrib_target_kl, **settings)
    ours = TRPO("MlpPolicy", ToyEnv(space), cg_damping=damping, target_kl=target_kl, cg_residual_tol=1e-12, **settings)
    ours.policy.load_state_dict(contrib.policy.state_dict())
    collect_rollout(contrib)
    ours.rollout_buffer = contrib.rollout_buffer
    for model in (contrib, ours):
        model.set_logger(configure(None, []))
    actor_names = [name for name, p in ours.policy.named_parameters() if any(p is q for q in ours._actor_params)]
    theta_old = flat_parameters(ours._actor_params).clone()
    contrib.train()
    ours.train()
    contrib_parameters = dict(contrib.policy.named_parameters())
    contrib_step = th.cat([contrib_parameters[name].detach().flatten() for name in actor_names]) - theta_old
    return contrib_step, flat_parameters(ours._actor_params) - theta_old


@pytest.mark.parametrize("space,averaged_terms", [("discrete", 1), ("multidiscrete", 1), ("box3", 3), ("multibinary", 3)])
def test_sb3_contrib_settings_times_the_averaged_terms_give_sb3_contrib_s_step(space, averaged_terms):
    # sb3-contrib bounds and damps the KL averaged over A terms; its CG solves (F / A + lambda I) x = g. The same
    # update here is target_kl = A delta and cg_damping = A lambda (how the zoo entries translate its settings).
    assert kl_averaged_dimensions(ACTION_SPACES[space]) == averaged_terms
    contrib_step, step = contrib_and_own_step(ACTION_SPACES[space], 0.1 * averaged_terms, 0.01 * averaged_terms)
    assert float(step @ contrib_step / (step.norm() * contrib_step.norm())) > 0.99999
    assert float(step.norm() / contrib_step.norm()) == pytest.approx(1.0, rel=1e-4)
    if averaged_terms > 1:
        # Keeping lambda while scaling delta is a different, longer step: the damping must scale too.
        _, undamped = contrib_and_own_step(ACTION_SPACES[space], 0.1, 0.01 * averaged_terms)
        assert float(undamped.norm() / contrib_step.norm()) > 1.05


def actor_step(model, theta_old):
    """The change of the actor's parameters, ordered as this package's TRPO orders them."""
    names = [
        name for name, p in model.policy.named_parameters() if name.startswith(("mlp_extractor.policy", "action", "log_std"))
    ]
    parameters = dict(model.policy.named_parameters())
    return th.cat([parameters[name].detach().flatten() for name in names]) - theta_old


@pytest.mark.parametrize("space,terms", [("box3", 3), ("multibinary", 3), ("discrete", 1)])
def test_a_loaded_sb3_contrib_zip_takes_sb3_contrib_s_step(tmp_path, space, terms):
    settings = dict(n_steps=256, batch_size=256, policy_kwargs=dict(net_arch=dict(pi=[16], vf=[16])), n_critic_updates=1)
    contrib = sb3_contrib.TRPO("MlpPolicy", ToyEnv(ACTION_SPACES[space]), cg_max_steps=300, seed=3, **settings)
    contrib.save(tmp_path / "contrib")
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        loaded = TRPO.load(tmp_path / "contrib", env=ToyEnv(ACTION_SPACES[space]), cg_residual_tol=1e-12)
    conversions = [str(w.message) for w in warned if "sb3_contrib.TRPO" in str(w.message)]
    # Said once where the trust region changes, in round figures; not at all where it is the same (A = 1).
    said = (
        f"Loaded an sb3_contrib.TRPO model, whose trust region and damping apply to the KL averaged over {terms} term(s); "
        f"to take the same step on the true KL: target_kl 0.01 -> {0.01 * terms:.4g}; cg_damping 0.1 -> {0.1 * terms:.4g}; "
        "line_search_accept_ratio 0 (it takes any improvement)."
    )
    assert conversions == ([said] if terms > 1 else [])
    assert (loaded.target_kl, loaded.cg_damping) == pytest.approx((terms * 0.01, terms * 0.1))
    assert loaded.line_search_accept_ratio == 0.0
    # The same batch for both: sb3-contrib's rollout.
    collect_rollout(contrib)
    loaded.rollout_buffer = contrib.rollout_buffer
    for model in (contrib, loaded):
        model.set_logger(configure(None, []))
    theta_old = flat_parameters(loaded._actor_params).clone()
    assert th.equal(actor_step(contrib, theta_old), th.zeros_like(theta_old))
    contrib.train()
    loaded.train()
    contrib_step, step = actor_step(contrib, theta_old), flat_parameters(loaded._actor_params) - theta_old
    assert contrib_step.norm() > 0
    assert float(step @ contrib_step / (step.norm() * contrib_step.norm())) > 0.99999  # direction
    assert float(step.norm() / contrib_step.norm()) == pytest.approx(1.0, rel=1e-4)  # size
    # Saved again, it is this TRPO's zip: loaded as it is, with no second conversion.
    loaded.save(tmp_path / "ours")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = TRPO.load(tmp_path / "ours")
    assert (again.target_kl, again.cg_damping, again.line_search_accept_ratio) == (
        loaded.target_kl,
        loaded.cg_damping,
        0.0,
    )


def test_values_given_to_load_are_taken_as_they_are(tmp_path):
    sb3_contrib.TRPO("MlpPolicy", ToyEnv(ACTION_SPACES["box3"]), n_steps=64, batch_size=64).save(tmp_path / "contrib")
    with pytest.warns(UserWarning, match="cg_damping 0.1 -> 0.3") as warned:
        loaded = TRPO.load(tmp_path / "contrib", target_kl=0.05)
    assert "target_kl" not in str(warned[0].message)
    assert (loaded.target_kl, loaded.cg_damping) == pytest.approx((0.05, 0.3))


@pytest.mark.parametrize("space", ["discrete", "box3"])
def test_entropy_bonus_enters_the_surrogate(space):
    model = model_with_rollout(ACTION_SPACES[space], ent_coef=0.5)
    problem = DenseProblem(model.policy, model._actor_params, *whole_batch(model), ent_coef=0.5)
    without_bonus = DenseProblem(model.policy, model._actor_params, *whole_batch(model))
    dense_step = problem.trpo_step(model.cg_damping, TARGET_KL)
    model.train()
    step = flat_parameters(model._actor_params) - problem.theta0
    assert float(step @ dense_step / (step.norm() * dense_step.norm())) > 0.999
    assert not th.allclose(problem.gradient(), without_bonus.gradient(), rtol=0.05)


def test_subsampling_changes_only_the_fisher():
    model = model_with_rollout(ACTION_SPACES["box3"], sub_sampling_factor=4)
    # train() shuffles the batch before taking every 4th sample; the same seed gives the same permutation.
    np.random.seed(0)
    observations, actions, advantages = whole_batch(model)
    problem = DenseProblem(model.policy, model._actor_params, observations, actions, advantages)
    fisher = problem.fisher(observations=observations[::4]).double()
    a = fisher + model.cg_damping * th.eye(len(problem.theta0), dtype=th.float64)
    g = problem.gradient().double()  # the gradient of the whole batch
    d = th.linalg.solve(a, g)
    dense_step = th.sqrt(2 * TARGET_KL / (d @ a @ d)) * d

    np.random.seed(0)
    model.train()
    step = (flat_parameters(model._actor_params) - problem.theta0).double()
    assert float(step @ dense_step / (step.norm() * dense_step.norm())) > 0.999
    full_fisher_step = problem.trpo_step(model.cg_damping, TARGET_KL).double()
    assert float(step @ full_fisher_step / (step.norm() * full_fisher_step.norm())) < 0.99


def test_failed_line_search_restores_theta_old_bit_for_bit(monkeypatch):
    model = model_with_rollout(ACTION_SPACES["box3"])
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    tried = []

    def reject(candidate, *args):
        tried.append(flat_parameters(model._actor_params))
        return False

    monkeypatch.setattr(sb3_trpo_ext.line_search, "is_acceptable", reject)
    model.train()
    assert len(tried) == model.line_search_max_iter
    assert all(not th.equal(theta, flat_parameters(model._actor_params)) for theta in tried)
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, before[key]), key
    assert model.logger.name_to_value["train/is_line_search_success"] == 0.0
    assert model.logger.name_to_value["train/kl_divergence"] == 0.0


def test_zero_gradient_skips_the_step_with_a_warning_and_a_count():
    model = model_with_rollout(ACTION_SPACES["discrete"])
    model.rollout_buffer.advantages[:] = 1.0  # normalised to zero: no direction to move in
    before = flat_parameters(model._actor_params)
    with pytest.warns(RuntimeWarning, match="policy step skipped"):
        model.train()
    assert th.equal(flat_parameters(model._actor_params), before)
    assert model.logger.name_to_value["train/skipped_policy_steps"] == 1


class Float64Flatten(FlattenExtractor):
    def forward(self, observations):
        return super().forward(observations).double()


class Float64Policy(ActorCriticPolicy):
    """The default policy in float64, so that covariance is not blurred by float32 rounding in CG."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, features_extractor_class=Float64Flatten, **kwargs)

    def _build(self, lr_schedule):
        super()._build(lr_schedule)
        self.double()


class ScaledLinear(nn.Linear):
    """A linear layer whose weights are stored divided by ``scale`` and multiplied back in forward."""

    scale = 10.0

    def forward(self, x):
        return nn.functional.linear(x, self.weight * self.scale, self.bias)


class ReparameterisedPolicy(Float64Policy):
    def _build(self, lr_schedule):
        super()._build(lr_schedule)
        plain = self.action_net
        self.action_net = ScaledLinear(plain.in_features, plain.out_features, dtype=th.float64)


def twin_models(space):
    """The same policy in two parameterisations, with the same rollout.

    The actor is linear in the observation (no hidden layer), so its Fisher is well conditioned and a small
    damping leaves the natural gradient exact: damping is the one part of TRPO that is not covariant.
    """
    settings = dict(
        policy_kwargs=dict(net_arch=dict(pi=[], vf=[8])),
        n_steps=128,
        batch_size=128,
        cg_damping=1e-5,
        cg_max_steps=500,
        cg_residual_tol=1e-12,
        target_kl=TARGET_KL,
        n_critic_updates=0,
        seed=1,
    )
    plain = TRPO(Float64Policy, ToyEnv(space), **settings)
    collect_rollout(plain)
    twin = TRPO(ReparameterisedPolicy, ToyEnv(space), **settings)
    state = dict(plain.policy.state_dict())
    state["action_net.weight"] = state["action_net.weight"] / ScaledLinear.scale
    twin.policy.load_state_dict(state)
    twin.rollout_buffer = copy.deepcopy(plain.rollout_buffer)
    twin.set_logger(configure(None, []))
    return plain, twin


def distribution_after(model, observations, update):
    update(model)
    with th.no_grad():
        return copy.copy(model.policy.get_distribution(observations))


def euclidean_step(model):
    """Plain gradient ascent with the same step rule: the same trust region, with the identity as metric."""
    observations, actions, advantages = whole_batch(model)
    params = model._actor_params
    theta_old = flat_parameters(params)
    with th.no_grad():
        old = copy.copy(model.policy.get_distribution(observations))
        old_log_prob = old.log_prob(actions)
    surrogate = surrogate_objective(model.policy.get_distribution(observations), actions, old_log_prob, advantages)
    g = flat_grad(surrogate, params)

    def evaluate(step):
        set_flat_parameters(params, theta_old + step)
        with th.no_grad():
            new = model.policy.get_distribution(observations)
            kl = kl_divergence(old, new)
            value = surrogate_objective(new, actions, old_log_prob, advantages)
        return Candidate(value.item(), kl.mean().item(), kl.max().item())

    full_step = max_step_size(float(g @ g), model.target_kl) * g
    result = backtracking_line_search(
        evaluate, full_step, surrogate.item(), float(g @ full_step), model.target_kl, 0.8, 10, 0.1
    )
    set_flat_parameters(params, theta_old + result.step)


@pytest.mark.parametrize("space", ["discrete", "box3", "multidiscrete"])
def test_trpo_step_is_covariant_and_gradient_step_is_not(space):
    plain, twin = twin_models(ACTION_SPACES[space])
    observations, _, _ = whole_batch(plain)
    trpo = [distribution_after(m, observations, TRPO.train) for m in (plain, twin)]
    trpo_gap = kl_divergence(*trpo).mean().item()

    plain, twin = twin_models(ACTION_SPACES[space])
    gradient = [distribution_after(m, observations, euclidean_step) for m in (plain, twin)]
    gradient_gap = kl_divergence(*gradient).mean().item()

    assert trpo_gap < 1e-6 * TARGET_KL
    assert gradient_gap > TARGET_KL / 10


def distribution_tensors(model, observations):
    with th.no_grad():
        distribution = model.policy.get_distribution(observations).distribution
    return [t.clone() for t in vars(distribution).values() if isinstance(t, th.Tensor)]


@pytest.mark.parametrize("policy,observation", [("MlpPolicy", "vector"), ("CnnPolicy", "image")])
def test_critic_step_leaves_the_action_distribution_unchanged(policy, observation):
    model = model_with_rollout(
        ACTION_SPACES["box3"], policy, observation, n_critic_updates=3, batch_size=16, learning_rate=1e-2, policy_kwargs=None
    )
    if policy == "CnnPolicy":
        assert model.policy.share_features_extractor
        shared = set(map(id, model.policy.features_extractor.parameters()))
        assert shared <= set(map(id, model._actor_params))
        assert not shared & set(map(id, model._critic_params))
    observations = next(model.rollout_buffer.get(batch_size=None)).observations
    before = distribution_tensors(model, observations)
    actor_before = flat_parameters(model._actor_params)
    critic_before = flat_parameters(model._critic_params)

    model._fit_critic()

    assert not th.equal(flat_parameters(model._critic_params), critic_before)
    assert th.equal(flat_parameters(model._actor_params), actor_before)
    for a, b in zip(before, distribution_tensors(model, observations), strict=True):
        assert th.equal(a, b)
    assert all(p.grad is None for p in model._actor_params)


@pytest.mark.parametrize("critic", ["mlp", "autograd"])
@pytest.mark.parametrize("observation", ["vector", "dict"])
def test_critic_fits_the_minibatches_the_rollout_buffer_yields(observation, critic):
    # Minibatches are cut from resident tensors; they must be RolloutBuffer.get's, from the same random draws
    # (for an MLP critic, their features).
    env = DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box3"], observation)] * 2)
    policy = "MultiInputPolicy" if observation == "dict" else "MlpPolicy"
    with pytest.warns(UserWarning, match="ends with a minibatch of 16 samples"):  # a short last minibatch, on purpose
        model = TRPO(policy, env, n_steps=32, batch_size=24, n_critic_updates=3, seed=0)
    assert model._speedups.critic is not None
    collect_rollout(model)
    next(model.rollout_buffer.get(batch_size=None))  # train() reads the whole batch first
    np.random.seed(7)
    features = (lambda obs: critic_features(model.policy, obs)) if critic == "mlp" else None
    resident = list(resident_minibatches(model.rollout_buffer, 3, 24, features))
    np.random.seed(7)
    copied = [(b.observations, b.returns) for _ in range(3) for b in model.rollout_buffer.get(batch_size=24)]
    assert len(resident) == len(copied) == 3 * 3  # 64 samples: 24, 24, 16 per epoch
    for (inputs, returns), (expected_observations, expected_returns) in zip(resident, copied, strict=True):
        assert th.equal(returns, expected_returns.unsqueeze(1))  # a column, as the critic's output
        if critic == "mlp":
            assert th.equal(inputs, critic_features(model.policy, expected_observations))
        elif observation == "dict":
            assert all(th.equal(inputs[key], expected_observations[key]) for key in expected_observations)
        else:
            assert th.equal(inputs, expected_observations)


def test_the_critic_takes_fused_adam_steps_unless_told_otherwise():
    model = model_with_rollout(ACTION_SPACES["box3"], n_critic_updates=2)
    assert model.policy.optimizer.defaults["fused"] is True
    told = model_with_rollout(
        ACTION_SPACES["box3"],
        n_critic_updates=2,
        policy_kwargs=dict(net_arch=dict(pi=[8], vf=[8]), optimizer_kwargs=dict(foreach=False)),
    )
    assert not told.policy.optimizer.defaults.get("fused")
    # The same Adam: from the same parameters and minibatches both critics take the same two steps of about lr
    # (1e-3) per weight, up to rounding where a gradient is as small as Adam's epsilon: two steps, not one.
    told.policy.load_state_dict(model.policy.state_dict())
    start = [param.detach().clone() for param in model._critic_params]
    for critic in (model, told):
        np.random.seed(0)
        critic.train()
    for fused, plain, old in zip(model._critic_params, told._critic_params, start, strict=True):
        assert (fused - old).abs().max() > 1.5e-3
        assert th.allclose(fused, plain, rtol=0, atol=5e-5)


def test_the_surrogate_is_the_importance_weighted_advantage():
    # Ratios far from 1, where exp(log pi - log pi_old) and its first-order expansion 1 + log-ratio part.
    old = CategoricalDistribution(3).proba_distribution(th.log(th.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])))
    new = CategoricalDistribution(3).proba_distribution(th.log(th.tensor([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6]])))
    actions, advantages = th.tensor([0, 2]), th.tensor([1.0, -2.0])
    value = surrogate_objective(new, actions, old.log_prob(actions), advantages)
    expected = (1.0 * 0.5 / 0.2 + -2.0 * 0.6 / 0.1) / 2  # mean of A pi / pi_old
    assert float(value) == pytest.approx(expected, rel=1e-6)
    entropy_bonus = surrogate_objective(new, actions, old.log_prob(actions), advantages, ent_coef=0.5) - value
    assert float(entropy_bonus) == pytest.approx(0.5 * float(new.entropy().mean()), rel=1e-6)


def test_a_critic_learning_rate_schedule_is_followed():
    model = TRPO("MlpPolicy", ToyEnv(ACTION_SPACES["box3"]), n_steps=32, batch_size=32, n_critic_updates=1,
                 learning_rate=lambda progress_remaining: 0.002 + 0.01 * progress_remaining, seed=0)  # fmt: skip
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(0.012)
    model.learn(4 * 32)
    # Each update sets the rate the schedule gives at its progress: the last one, at progress 0, 0.002.
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(0.002)
    assert model.logger.name_to_value["train/learning_rate"] == pytest.approx(0.002)


def test_fast_paths_off_take_none_and_give_the_same_update(monkeypatch):
    def model(fast_paths):
        env = DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box3"])] * 2)
        return TRPO("MlpPolicy", env, n_steps=32, batch_size=16, n_critic_updates=2, seed=5, fast_paths=fast_paths)

    on = model(True)
    assert on._speedups.actor is not None and on._speedups.critic is not None
    on.learn(64)
    off = model(False)  # seeded as ``on`` was

    def forbidden(*args, **kwargs):
        raise AssertionError("a fast path ran with fast_paths=False")

    for owner, name in [
        (sb3_trpo_ext.mlp.MlpNetwork, "forward"),
        (sb3_trpo_ext.rollout.MlpRolloutActor, "__call__"),
        (sb3_trpo_ext.rollout.NumpyRolloutActor, "act"),
        (sb3_trpo_ext.fast_paths, "generalized_advantages"),
        (sb3_trpo_ext.rollout, "distribution_checks_off"),
        (sb3_trpo_ext.critic, "resident_minibatches"),
        (sb3_trpo_ext.critic, "optimizer_steps"),
        (sb3_trpo_ext.fisher, "_mlp_gauss_newton_product"),
        (sb3_trpo_ext.fisher, "parameters_replaced"),
    ]:
        monkeypatch.setattr(owner, name, forbidden)
    added = []
    real_add = RolloutBuffer.add
    monkeypatch.setattr(RolloutBuffer, "add", lambda buffer, *args: added.append(1) or real_add(buffer, *args))
    off.learn(64)
    assert len(added) == 32  # SB3's own RolloutBuffer.add, every step
    assert not off.policy.optimizer.defaults.get("fused")
    # The same rollout (the same random draws, to float32 rounding), then the same update up to rounding.
    np.testing.assert_allclose(on.rollout_buffer.actions, off.rollout_buffer.actions, rtol=1e-6, atol=1e-6)
    for a, b in zip(on.policy.parameters(), off.policy.parameters(), strict=True):
        th.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
