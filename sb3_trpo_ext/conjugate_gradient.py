"""Conjugate gradient for (F + lambda I) x = g with only matrix-vector products (docs/algorithm.md §3)."""

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


def check_interval(device: th.device) -> int:
    """
    How many iterations run between two looks of the host at whether CG has stopped. On an accelerator reading a
    tensor waits for all queued work, so the loop looks every 5 iterations (at most 4 products wasted after
    stopping); on the CPU a look is free, so every iteration.
    """
    return 1 if device.type == "cpu" else 5


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

    Whether to stop is decided on the device: an iterate that has stopped is kept by masks, so the result does not
    depend on how often the host looks (:func:`check_interval`).

    :param matrix_vector_product: v -> A v
    :param b: right-hand side (for TRPO the policy gradient g)
    :param max_steps: the most products A p to perform
    :param residual_tol: relative residual at which to stop
    """
    check_every = check_interval(b.device)
    x = th.zeros_like(b)
    r = b.clone()
    p = r.clone()
    r_dot_r = r @ r
    b_dot_b = r_dot_r
    stop_at = residual_tol**2 * b_dot_b
    running = r_dot_r > stop_at
    iterations = th.zeros((), dtype=th.long, device=b.device)
    for step in range(max_steps):
        if step % check_every == 0 and not running:
            break
        a_p = matrix_vector_product(p)
        p_a_p = p @ a_p
        running = running & th.isfinite(p_a_p) & (p_a_p > 0)
        iterations += running
        alpha = r_dot_r / p_a_p
        # x and r stay as they were once CG has stopped; p may then turn to anything, as only x and r are read.
        x = th.where(running, x + alpha * p, x)
        r = th.where(running, r - alpha * a_p, r)
        new_r_dot_r = r @ r
        p = r + (new_r_dot_r / r_dot_r) * p
        r_dot_r = new_r_dot_r
        running = running & (r_dot_r > stop_at)
    residual = float((r_dot_r / b_dot_b).sqrt()) if b_dot_b > 0 else 0.0
    return ConjugateGradientResult(x, float(x @ (b - r)), int(iterations), residual)
