import pytest
import torch as th

from sb3_trpo_ext.conjugate_gradient import conjugate_gradient


def random_spd(n, condition=100.0, seed=0):
    gen = th.Generator().manual_seed(seed)
    q, _ = th.linalg.qr(th.randn(n, n, generator=gen, dtype=th.float64))
    eigenvalues = th.logspace(0, float(th.log10(th.tensor(condition))), n, dtype=th.float64)
    return q @ th.diag(eigenvalues) @ q.T, th.randn(n, generator=gen, dtype=th.float64)


@pytest.mark.parametrize("n,seed", [(5, 0), (20, 1), (60, 2)])
def test_solution_matches_dense_solve(n, seed):
    a, b = random_spd(n, seed=seed)
    result = conjugate_gradient(lambda v: a @ v, b, max_steps=10 * n, residual_tol=1e-12)
    th.testing.assert_close(result.solution, th.linalg.solve(a, b), rtol=1e-8, atol=1e-10)
    assert result.residual <= 1e-12
    assert float((b - a @ result.solution).norm() / b.norm()) < 1e-10


@pytest.mark.parametrize("max_steps", [1, 3, 8])
def test_curvature_equals_explicit_product_also_when_truncated(max_steps):
    a, b = random_spd(30, condition=1e4, seed=3)
    result = conjugate_gradient(lambda v: a @ v, b, max_steps=max_steps, residual_tol=0.0)
    x = result.solution
    assert result.iterations == max_steps
    assert result.curvature == pytest.approx(float(x @ a @ x), rel=1e-10)
    assert result.residual == pytest.approx(float((b - a @ x).norm() / b.norm()), rel=1e-6)


def test_counts_products_and_stops_on_relative_residual():
    a, b = random_spd(40, condition=10.0, seed=4)
    products = []
    result = conjugate_gradient(lambda v: products.append(1) or a @ v, b, max_steps=100, residual_tol=1e-3)
    assert result.iterations == len(products) < 40
    assert result.residual <= 1e-3
    # Scaling b must not change when it stops: the tolerance is relative.
    scaled = conjugate_gradient(lambda v: a @ v, 1e6 * b, max_steps=100, residual_tol=1e-3)
    assert scaled.iterations == result.iterations


def test_exact_in_n_steps_for_n_distinct_eigenvalues():
    a = th.diag(th.tensor([1.0, 2.0, 2.0, 5.0, 5.0, 5.0], dtype=th.float64))
    b = th.ones(6, dtype=th.float64)
    result = conjugate_gradient(lambda v: a @ v, b, max_steps=3, residual_tol=0.0)
    th.testing.assert_close(result.solution, b / th.diag(a))


def test_zero_right_hand_side_gives_zero_and_zero_curvature():
    a, _ = random_spd(4)
    result = conjugate_gradient(lambda v: a @ v, th.zeros(4, dtype=th.float64), max_steps=10)
    assert result.iterations == 0 and result.curvature == 0.0
    assert th.equal(result.solution, th.zeros(4, dtype=th.float64))


def test_stops_on_non_positive_or_non_finite_curvature_with_a_finite_iterate():
    b = th.ones(3, dtype=th.float64)
    negative = conjugate_gradient(lambda v: -v, b, max_steps=10)
    assert negative.iterations == 0 and th.equal(negative.solution, th.zeros(3, dtype=th.float64))
    nan = conjugate_gradient(lambda v: v * float("nan"), b, max_steps=10)
    assert th.isfinite(nan.solution).all() and nan.curvature == 0.0
