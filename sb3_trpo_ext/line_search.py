"""The backtracking line search (docs/algorithm.md §6)."""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch as th


@dataclass(frozen=True)
class Candidate:
    """What the line search needs to know of theta_old + step."""

    surrogate: float
    mean_kl: float
    max_kl: float

    @property
    def is_finite(self) -> bool:
        """Whether the surrogate and the mean KL are both finite numbers."""
        return math.isfinite(self.surrogate) and math.isfinite(self.mean_kl)


@dataclass(frozen=True)
class StepResult:
    """
    How much of the proposed step beta * d a step rule took (docs/algorithm.md §6).

    :param step: the step taken, alpha^j * beta * d (zeros when none was taken)
    :param fraction: alpha^j for the step taken (1 for the whole step), 0 when none was taken
    :param candidate: the policy the step moved to, judged on the exact surrogate and KL; None when none was taken
    :param n_evaluated: how many candidates were judged
    :param n_nonfinite: how many of them had a non-finite surrogate or KL
    :param line_search_steps: the candidates a line search judged; None for a rule without a line search
    """

    step: th.Tensor
    fraction: float
    candidate: Candidate | None
    n_evaluated: int
    n_nonfinite: int = 0
    line_search_steps: int | None = None

    @property
    def accepted(self) -> bool:
        """Whether a step was taken."""
        return self.candidate is not None

    @classmethod
    def rejected(cls, like: th.Tensor, n_evaluated: int, n_nonfinite: int = 0, line_search: bool = False) -> "StepResult":
        """No step: theta stays theta_old."""
        return cls(th.zeros_like(like), 0.0, None, n_evaluated, n_nonfinite, n_evaluated if line_search else None)


def is_acceptable(
    candidate: Candidate,
    surrogate_before: float,
    expected_improvement: float,
    target_kl: float,
    accept_ratio: float,
) -> bool:
    """
    The acceptance test of docs/algorithm.md §6: surrogate and KL finite, mean KL <= delta, an actual improvement,
    and an improvement of at least ``accept_ratio`` times what the linear model expected.
    """
    if not candidate.is_finite:
        return False
    improvement = candidate.surrogate - surrogate_before
    return candidate.mean_kl <= target_kl and improvement > 0.0 and improvement >= accept_ratio * expected_improvement


def backtracking_line_search(
    evaluate: Callable[[th.Tensor], Candidate],
    full_step: th.Tensor,
    surrogate_before: float,
    expected_improvement: float,
    target_kl: float,
    shrinking_factor: float,
    max_iter: int,
    accept_ratio: float,
) -> StepResult:
    """
    Try theta_old + alpha^j * full_step for j = 0, 1, ..., max_iter - 1 and return the first acceptable one.

    :param evaluate: step -> Candidate for theta_old + step
    :param full_step: beta * d
    :param surrogate_before: L(theta_old)
    :param expected_improvement: g^T full_step, the improvement predicted by the linear model
    :param target_kl: delta
    :param shrinking_factor: alpha in (0, 1)
    :param max_iter: the number of candidates J
    :param accept_ratio: the least fraction of the expected improvement to accept (0 turns the test off)
    """
    n_nonfinite = 0
    for j in range(max_iter):
        fraction = shrinking_factor**j
        step = fraction * full_step
        candidate = evaluate(step)
        if is_acceptable(candidate, surrogate_before, fraction * expected_improvement, target_kl, accept_ratio):
            return StepResult(step, fraction, candidate, j + 1, n_nonfinite, line_search_steps=j + 1)
        n_nonfinite += not candidate.is_finite
    return StepResult.rejected(full_step, max_iter, n_nonfinite, line_search=True)
