"""Each train/ statistic of every algorithm against its definition, computed densely on a batch where they differ."""

import copy

import numpy as np
import pytest
import torch as th
from helpers import (
    ACTION_SPACES,
    DENSE_SETTINGS,
    DenseProblem,
    MaskedDenseProblem,
    MaskedToyEnv,
    ToyEnv,
    collect_rollout,
    reference_kl,
)
from test_variants import MASKED_SPACES, masked_dims

from sb3_trpo_ext import NPG, TRPO, MaskableNPG, MaskableTRPO, RecurrentTRPO
from sb3_trpo_ext.surrogate import normalize_advantages
from sb3_trpo_ext.update import distribution_actions

SETTINGS = {**DENSE_SETTINGS, "target_kl": 0.02, "n_critic_updates": 1}


def per_state_kl(problem, theta):
    """KL(pi_old || pi_theta) of each state (over the allowed actions for a masked problem)."""
    if isinstance(problem, MaskedDenseProblem):  # [state][sub-space] -> log-probabilities of the allowed actions
        old, new = problem.allowed_log_probs(problem.theta0), problem.allowed_log_probs(theta)
        return th.stack(
            [sum((p.exp() * (p - q)).sum() for p, q in zip(o, n, strict=True)) for o, n in zip(old, new, strict=True)]
        )
    with th.no_grad():
        old = copy.copy(problem.distribution(problem.theta0))
    return reference_kl(old, problem.distribution(theta))


def model_and_problem(algorithm, space):
    if algorithm is RecurrentTRPO:
        from test_recurrent import TINY, dense_problem, envs, second_rollout

        model = RecurrentTRPO("MlpLstmPolicy", envs(ACTION_SPACES[space]), **{**TINY, "n_critic_updates": 1})
        second_rollout(model)
        return model, dense_problem(model)
    if algorithm in (MaskableTRPO, MaskableNPG):
        model = algorithm("MlpPolicy", MaskedToyEnv(MASKED_SPACES[space]), **SETTINGS)
        collect_rollout(model)
        data = next(copy.deepcopy(model.rollout_buffer).get(batch_size=None))
        problem = MaskedDenseProblem(model.policy, model._actor_params, data.observations, data.actions,
                                     normalize_advantages(data.advantages), data.action_masks,
                                     masked_dims(MASKED_SPACES[space]))  # fmt: skip
        return model, problem
    model = algorithm("MlpPolicy", ToyEnv(ACTION_SPACES[space]), **SETTINGS)
    collect_rollout(model)
    data = next(copy.deepcopy(model.rollout_buffer).get(batch_size=None))
    actions = distribution_actions(data.actions, model.action_space)
    return model, DenseProblem(model.policy, model._actor_params, data.observations, actions,
                               normalize_advantages(data.advantages))  # fmt: skip


CASES = [
    (TRPO, "box3"),
    (TRPO, "discrete"),
    (NPG, "box3"),
    (MaskableTRPO, "discrete"),
    (MaskableNPG, "multidiscrete"),
    (RecurrentTRPO, "box3"),
]


@pytest.mark.parametrize("algorithm,space", CASES, ids=[f"{a.__name__}-{s}" for a, s in CASES])
def test_every_logged_statistic_is_its_definition(algorithm, space):
    model, problem = model_and_problem(algorithm, space)
    buffer = model.rollout_buffer
    values, returns = buffer.values.flatten().copy(), buffer.returns.flatten().copy()
    n_updates = model._n_updates
    theta0 = problem.theta0
    if isinstance(problem, MaskedDenseProblem):
        old_entropy = th.stack([-sum((lp.exp() * lp).sum() for lp in state) for state in problem.allowed_log_probs(theta0)])
    else:
        old_entropy = problem.distribution(theta0).entropy()
    gradient = problem.gradient()
    model.train()
    logged = {key[len("train/") :]: value for key, value in model.logger.name_to_value.items() if key.startswith("train/")}
    theta1 = th.cat([p.detach().reshape(-1) for p in model._actor_params])
    step = theta1 - theta0
    kl = per_state_kl(problem, theta1).detach()
    surrogate_before, surrogate_after = float(problem.surrogate(theta0)), float(problem.surrogate(theta1))

    assert step.norm() > 0
    assert logged["policy_objective"] == pytest.approx(surrogate_after, rel=1e-4, abs=1e-6)
    assert logged["surrogate_improvement"] == pytest.approx(surrogate_after - surrogate_before, rel=1e-3, abs=1e-6)
    assert logged["surrogate_improvement"] > 0
    assert logged["expected_improvement"] == pytest.approx(float(gradient @ step), rel=1e-3)
    assert logged["expected_improvement"] > 0
    # The mean and the largest KL of the step taken, on a batch where they differ.
    assert float(kl.max()) > 1.2 * float(kl.mean())
    assert logged["kl_divergence"] == pytest.approx(float(kl.mean()), rel=1e-3)
    assert logged["max_kl"] == pytest.approx(float(kl.max()), rel=1e-3)
    assert logged["kl_before"] == 0.0  # pi_old and pi_theta_old are one evaluation of the same parameters
    assert logged["target_kl"] == model.target_kl
    assert logged["grad_norm"] == pytest.approx(float(gradient.norm()), rel=1e-4)
    assert logged["entropy"] == pytest.approx(float(old_entropy.mean()), rel=1e-4)
    # The values the rollout predicted (before the critic's fit) against the returns, and not the other way round.
    explained = 1 - np.var(returns - values) / np.var(returns)
    # Near 0 (a critic not yet fitted) float32's rounding of the two variances dominates: an absolute tolerance too.
    assert logged["explained_variance"] == pytest.approx(explained, rel=1e-5, abs=1e-6)
    assert abs(explained - (1 - np.var(values - returns) / np.var(values))) > 0.01
    has_line_search = algorithm in (TRPO, MaskableTRPO, RecurrentTRPO)
    assert ("line_search_steps" in logged) == ("is_line_search_success" in logged) == has_line_search
    if has_line_search:
        assert logged["is_line_search_success"] == 1.0 and logged["line_search_steps"] >= 1
    assert 1 <= logged["cg_iterations"] <= model.cg_max_steps and logged["cg_residual"] >= 0
    assert logged["value_loss"] > 0 and logged["n_updates"] == n_updates + 1
    assert ("std" in logged) == space.startswith("box")
    if space.startswith("box"):
        assert logged["std"] == pytest.approx(float(th.exp(model.policy.log_std).mean()))


def test_kl_before_reports_a_policy_that_differs_between_two_evaluations():
    # Dropout in training mode: pi_old and pi at theta_old are two evaluations with different masks.
    from stable_baselines3.common.torch_layers import FlattenExtractor

    class DropoutExtractor(FlattenExtractor):
        def __init__(self, observation_space):
            super().__init__(observation_space)
            self.dropout = th.nn.Dropout(0.5)

        def forward(self, observations):
            return self.dropout(super().forward(observations))

    kwargs = {**SETTINGS, "policy_kwargs": {**SETTINGS.get("policy_kwargs", {}), "features_extractor_class": DropoutExtractor}}
    model = TRPO("MlpPolicy", ToyEnv(ACTION_SPACES["box3"]), **kwargs)
    collect_rollout(model)
    model.train()
    assert model.logger.name_to_value["train/kl_before"] > 0


def test_the_ratio_test_uses_the_improvement_the_linear_model_expects():
    # A demanding ratio: the whole step improves the surrogate by less than 0.99 of g^T beta d, so the line search
    # must shrink it, exactly as the dense line search does.
    model, problem = model_and_problem(TRPO, "box3")
    model.line_search_accept_ratio = 0.99
    dense_step = problem.trpo_step(model.cg_damping, model.target_kl)
    fraction = problem.line_search_fraction(dense_step, model.target_kl, model.line_search_shrinking_factor,
                                            model.line_search_max_iter, 0.99)  # fmt: skip
    assert 0 < fraction < 1
    problem.assert_update_is_the_dense_step(model)
    assert model.logger.name_to_value["train/line_search_steps"] > 1


def test_the_console_shows_the_step_and_the_fit_and_the_other_outputs_every_statistic(tmp_path, capsys):
    import csv

    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import configure

    from sb3_trpo_ext import TRPO
    from sb3_trpo_ext.update import DIAGNOSTICS

    model = TRPO("MlpPolicy", make_vec_env("Pendulum-v1"), n_steps=64, batch_size=64, n_critic_updates=1, seed=0)
    model.set_logger(configure(str(tmp_path), ["stdout", "csv"]))
    model.learn(128)
    console = capsys.readouterr().out
    with open(tmp_path / "progress.csv") as file:
        columns = set(next(csv.reader(file)))
    hidden = {*DIAGNOSTICS, "skipped_policy_steps", "skipped_updates"}
    assert {f"train/{name}" for name in hidden} <= columns
    assert not [name for name in hidden if f" {name} " in console]
    for name in ("policy_objective", "kl_divergence", "step_size", "value_loss", "explained_variance", "entropy", "std"):
        assert f" {name} " in console and f"train/{name}" in columns
