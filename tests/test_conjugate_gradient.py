import pytest
import torch as th
from torch.utils._python_dispatch import TorchDispatchMode

import sb3_trpo_ext.conjugate_gradient
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


SYSTEMS = {
    "converges early": (lambda: random_spd(40, condition=10.0, seed=4), 100, 1e-3),
    "truncated": (lambda: random_spd(30, condition=1e4, seed=3), 8, 0.0),
    "negative curvature": (lambda: (-th.eye(3, dtype=th.float64), th.ones(3, dtype=th.float64)), 10, 1e-10),
    "indefinite after a few steps": (
        lambda: (th.diag(th.tensor([1.0, 2.0, 3.0, -1.0], dtype=th.float64)), th.ones(4, dtype=th.float64)),
        10,
        0.0,
    ),
}


@pytest.mark.parametrize("interval", [2, 3, 7, 1000])
@pytest.mark.parametrize("system", list(SYSTEMS))
def test_the_result_does_not_depend_on_how_often_the_host_looks(system, interval, monkeypatch):
    make, max_steps, tol = SYSTEMS[system]
    a, b = make()
    every_step = conjugate_gradient(lambda v: a @ v, b, max_steps=max_steps, residual_tol=tol)
    monkeypatch.setattr(sb3_trpo_ext.conjugate_gradient, "check_interval", lambda device: interval)
    products = []
    sparse = conjugate_gradient(lambda v: products.append(1) or a @ v, b, max_steps=max_steps, residual_tol=tol)
    assert th.equal(sparse.solution, every_step.solution)
    assert (sparse.iterations, sparse.curvature, sparse.residual) == (
        every_step.iterations,
        every_step.curvature,
        every_step.residual,
    )
    # A stopped CG runs on at most to the next look (a rejected direction costs a product, not an iteration).
    assert every_step.iterations <= len(products) <= min(max_steps, every_step.iterations + interval)


class HostReads(TorchDispatchMode):
    """Counts reads of tensor values by the host (.item(), bool(), float()): each one a wait on an accelerator."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is th.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def test_no_host_read_per_iteration_where_looks_are_rare(monkeypatch):
    a, b = random_spd(30, condition=1e4, seed=3)
    monkeypatch.setattr(sb3_trpo_ext.conjugate_gradient, "check_interval", lambda device: 1000)
    reads = {}
    for max_steps in (2, 20):
        with HostReads() as counter:
            result = conjugate_gradient(lambda v: a @ v, b, max_steps=max_steps, residual_tol=0.0)
        assert result.iterations == max_steps
        reads[max_steps] = counter.count
    assert reads[2] == reads[20]  # the reads at the start and for the result, none per iteration
    monkeypatch.undo()
    with HostReads() as counter:
        conjugate_gradient(lambda v: a @ v, b, max_steps=20, residual_tol=0.0)
    assert counter.count > reads[20]  # the CPU looks every iteration (free there), which the counter sees
