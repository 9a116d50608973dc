import pytest
import torch as th

from sb3_trpo_ext.line_search import Candidate, backtracking_line_search, is_acceptable
from sb3_trpo_ext.update import max_step_size


def test_max_step_size_puts_the_quadratic_kl_at_delta():
    curvature, delta = 0.37, 0.02
    beta = max_step_size(curvature, delta)
    assert 0.5 * beta**2 * curvature == pytest.approx(delta)


@pytest.mark.parametrize("curvature", [0.0, -1.0, float("nan"), float("inf")])
def test_max_step_size_refuses_bad_curvature(curvature):
    assert max_step_size(curvature, 0.01) is None


def quadratic_problem(kl_scale=1.0, gain=1.0):
    """Surrogate gain * (s - s^2 / 4) and KL kl_scale * s^2 along one direction, s the step length."""
    calls = []

    def evaluate(step):
        s = float(step.sum())
        calls.append(s)
        kl = kl_scale * s**2
        return Candidate(gain * (s - s * s / 4), kl, 2 * kl)

    return evaluate, calls


def search(evaluate, full_step=1.0, expected=1.0, target_kl=0.1, ratio=0.1, max_iter=10, alpha=0.5):
    return backtracking_line_search(evaluate, th.tensor([full_step]), 0.0, expected, target_kl, alpha, max_iter, ratio)


def test_rejects_candidates_above_the_kl_bound_and_takes_the_first_inside():
    evaluate, calls = quadratic_problem(kl_scale=1.0)
    result = search(evaluate, target_kl=0.1)
    # KL = s^2: 1, 0.25, 0.0625 -> the third candidate is the first with KL <= 0.1
    assert calls == [1.0, 0.5, 0.25]
    assert result.accepted and result.line_search_steps == 3 and result.fraction == 0.25
    assert result.candidate.mean_kl <= 0.1
    th.testing.assert_close(result.step, th.tensor([0.25]))


def test_rejects_candidates_that_lower_the_surrogate():
    evaluate, calls = quadratic_problem(kl_scale=0.0, gain=-1.0)
    result = search(evaluate, max_iter=4)
    assert not result.accepted and len(calls) == 4
    assert th.equal(result.step, th.zeros(1)) and result.candidate is None and result.fraction == 0.0


def test_ratio_test_demands_a_fraction_of_the_expected_improvement():
    # Improvement of s - s^2/4 against an expected 10 s: ratio about 0.1 - s/40.
    evaluate, _ = quadratic_problem(kl_scale=0.0)
    assert not search(evaluate, expected=10.0, ratio=0.1, max_iter=6).accepted
    assert search(evaluate, expected=10.0, ratio=0.0, max_iter=6).accepted
    assert search(evaluate, expected=10.0, ratio=0.05, max_iter=6).accepted


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_candidates_are_rejected(bad):
    base = Candidate(1.0, 0.001, 0.002)
    assert is_acceptable(base, 0.0, 1.0, 0.01, 0.1)
    assert not is_acceptable(Candidate(bad, 0.001, 0.002), 0.0, 1.0, 0.01, 0.1)
    assert not is_acceptable(Candidate(1.0, bad, bad), 0.0, 1.0, 0.01, 0.1)


def test_kl_bound_is_inclusive_and_improvement_strict():
    assert is_acceptable(Candidate(1.0, 0.01, 0.5), 0.0, 1.0, 0.01, 0.0)
    assert not is_acceptable(Candidate(0.0, 0.001, 0.5), 0.0, 1.0, 0.01, 0.0)
    assert not is_acceptable(Candidate(1.0, 0.01 + 1e-9, 0.5), 0.0, 1.0, 0.01, 0.0)
