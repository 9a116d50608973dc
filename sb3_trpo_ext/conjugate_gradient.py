"""Conjugate gradient for (F + lambda I) x = g with only matrix-vector products (spec §4)."""

from collections.abc import Callable
from dataclasses import dataclass

import torch as th


@dataclass(frozen=True)
class ConjugateGradientResult:
    """
    :param solution: x, the approximate solution of A x = b
    :param curvature: x^T A x, obtained as x^T (b - r) from the final residual r (no extra product)
    :param iterations: number of products A p performed
    :param residual: relative residual ||b - A x|| / ||b|| of the returned solution (as tracked by CG)
    """

    solution: th.Tensor
    curvature: float
    iterations: int
    residual: float


def conjugate_gradient(
    matrix_vector_product: Callable[[th.Tensor], th.Tensor],
    b: th.Tensor,
    max_steps: int,
    residual_tol: float = 1e-10,
) -> ConjugateGradientResult:
    """
    Solve A x = b for a symmetric positive definite A, starting from x0 = 0.

    Stops after ``max_steps`` products, once ||r|| <= residual_tol * ||b||, or when a direction has
    non-positive or non-finite curvature p^T A p (A is then not positive definite along p, or a product
    failed); the last good iterate is returned, so the solution is always finite when b is.

    :param matrix_vector_product: v -> A v
    :param b: right-hand side (for TRPO the policy gradient g)
    :param max_steps: the most products A p to perform
    :param residual_tol: relative residual at which to stop
    """
    x = th.zeros_like(b)
    r = b.clone()
    p = r.clone()
    r_dot_r = r @ r
    b_dot_b = r_dot_r
    stop_at = residual_tol**2 * b_dot_b
    iterations = 0
    for _ in range(max_steps):
        if r_dot_r <= stop_at:
            break
        a_p = matrix_vector_product(p)
        p_a_p = p @ a_p
        if not (th.isfinite(p_a_p) and p_a_p > 0):
            break
        iterations += 1
        alpha = r_dot_r / p_a_p
        x = x + alpha * p
        r = r - alpha * a_p
        new_r_dot_r = r @ r
        p = r + (new_r_dot_r / r_dot_r) * p
        r_dot_r = new_r_dot_r
    residual = float((r_dot_r / b_dot_b).sqrt()) if b_dot_b > 0 else 0.0
    return ConjugateGradientResult(x, float(x @ (b - r)), iterations, residual)
