"""
The step rules: how much of the natural-gradient step beta * d an algorithm takes (docs/algorithm.md §6), given a
function that judges a candidate step on the exact surrogate and KL. An algorithm names its rule (``step_rule``); the
rule reads its hyperparameters from the algorithm, where they are attributes of the same name.
"""

import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch as th

from sb3_trpo_ext.fisher import kl_averaged_dimensions
from sb3_trpo_ext.hyperparameters import is_count, is_finite_real, requirement
from sb3_trpo_ext.line_search import Candidate, StepResult, backtracking_line_search
from sb3_trpo_ext.update import ProposedStep

#: step -> the policy at theta_old + step, judged (it stays there until the next call or the update's end).
Evaluate = Callable[[th.Tensor], Candidate]


class StepRule:
    """
    A step rule: ``take`` returns what it took of ``proposed``; ``validate`` checks the algorithm's hyperparameters
    it reads (``hyperparameters``), of which a model's zip holds at least ``saved``.
    """

    hyperparameters: ClassVar[frozenset[str]] = frozenset()
    saved: ClassVar[frozenset[str]] = frozenset()

    def validate(self, algorithm: Any) -> None:
        """Raise a HyperparameterError naming the first of the rule's hyperparameters outside its values."""

    def nothing_to_take(self, like: th.Tensor) -> StepResult:
        """The result when no step was proposed (no sound step size): nothing judged, nothing taken."""
        return StepResult.rejected(like, n_evaluated=0)

    def take(self, algorithm: Any, proposed: ProposedStep, evaluate: Evaluate) -> StepResult:
        """What the rule takes of ``proposed``, judging candidates with ``evaluate``."""
        raise NotImplementedError(f"{type(algorithm).__name__} names no step rule (step_rule = LineSearch(), ...)")


class LineSearch(StepRule):
    """TRPO's rule: the first candidate theta_old + alpha^j beta d whose exact mean KL is within delta and whose
    surrogate improves by enough (``line_search_shrinking_factor``, ``line_search_max_iter``,
    ``line_search_accept_ratio``)."""

    hyperparameters = frozenset({"line_search_shrinking_factor", "line_search_max_iter", "line_search_accept_ratio"})
    # sb3-contrib's TRPO saves these two too (not the ratio test), so that its zips are recognised as TRPO's.
    saved = frozenset({"line_search_shrinking_factor", "line_search_max_iter"})

    def validate(self, algorithm: Any) -> None:
        require, a = requirement(algorithm), algorithm
        require(
            is_finite_real(a.line_search_shrinking_factor) and 0 < a.line_search_shrinking_factor < 1,
            "line_search_shrinking_factor",
            "in the open interval (0, 1)",
        )
        require(
            is_finite_real(a.line_search_accept_ratio) and 0 <= a.line_search_accept_ratio < 1,
            "line_search_accept_ratio",
            "in [0, 1)",
        )
        require(is_count(a.line_search_max_iter, 1), "line_search_max_iter", "an integer >= 1")

    def nothing_to_take(self, like: th.Tensor) -> StepResult:
        return StepResult.rejected(like, n_evaluated=0, line_search=True)  # logged as a line search of no candidate

    def take(self, algorithm: Any, proposed: ProposedStep, evaluate: Evaluate) -> StepResult:
        return backtracking_line_search(
            evaluate,
            proposed.full_step,
            surrogate_before=proposed.surrogate_before,
            expected_improvement=proposed.expected_improvement,
            target_kl=proposed.target_kl,
            shrinking_factor=algorithm.line_search_shrinking_factor,
            max_iter=algorithm.line_search_max_iter,
            accept_ratio=algorithm.line_search_accept_ratio,
        )

    @staticmethod
    def take_sb3_contrib_settings(algorithm: Any, given: set[str]) -> None:
        """
        A model loaded from sb3-contrib's TRPO, made to take the step it took there: sb3-contrib bounds and damps the
        KL averaged over A terms (docs/algorithm.md §9), so its (delta, lambda) is (A delta, A lambda) here, and its
        line search takes any improvement (``line_search_accept_ratio=0``). Where A > 1 a warning says what changed
        (with A = 1 the trust region is the same); the names in ``given`` (passed to ``load``) are left as they are.
        """
        terms = kl_averaged_dimensions(algorithm.action_space)
        changed = []
        for name in ("target_kl", "cg_damping"):  # numbers in sb3-contrib, which takes no schedule for either
            if name not in given and terms != 1:
                value = getattr(algorithm, name)
                setattr(algorithm, name, terms * value)
                changed.append(f"{name} {value:.4g} -> {terms * value:.4g}")
        if "line_search_accept_ratio" not in given:
            algorithm.line_search_accept_ratio = 0.0
            changed.append("line_search_accept_ratio 0 (it takes any improvement)")
        algorithm._validate_hyperparameters()
        algorithm._setup_schedules()  # load set them up on the zip's target_kl
        if terms != 1 and changed:
            warnings.warn(
                f"Loaded an sb3_contrib.TRPO model, whose trust region and damping apply to the KL averaged over "
                f"{terms} term(s); to take the same step on the true KL: {'; '.join(changed)}.",
                UserWarning,
                stacklevel=3,
            )


class WholeStep(StepRule):
    """NPG's rule: theta_old + beta d as it is, measured and taken whatever it measures, if its surrogate and KL are
    finite numbers."""

    def take(self, algorithm: Any, proposed: ProposedStep, evaluate: Evaluate) -> StepResult:
        candidate = evaluate(proposed.full_step)
        if not candidate.is_finite:
            return StepResult.rejected(proposed.full_step, n_evaluated=1, n_nonfinite=1)
        return StepResult(proposed.full_step, 1.0, candidate, n_evaluated=1)


#: Every step rule, to tell one algorithm's zip from another's by the hyperparameters it holds.
STEP_RULES: tuple[StepRule, ...] = (LineSearch(), WholeStep())
