"""What one policy update reads of the rollout, its step size, its rollback and what it reports (docs/algorithm.md)."""

import copy
import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from sb3_trpo_ext.line_search import StepResult
from sb3_trpo_ext.policies import PolicyInputs


@dataclass(frozen=True)
class PolicyBatch:
    """
    The rollout as the policy step reads it.

    :param inputs: what the policy reads on the states s
    :param actions: the actions a, as the distribution takes them
    :param advantages: the advantages A (normalised if the algorithm says so)
    :param old_distribution: pi_old on the states, detached
    :param old_log_prob: log pi_old(a|s), detached
    """

    inputs: PolicyInputs
    actions: th.Tensor
    advantages: th.Tensor
    old_distribution: Distribution
    old_log_prob: th.Tensor


def max_step_size(curvature: float, target_kl: float) -> float | None:
    """
    beta = sqrt(2 delta / d^T (F + lambda I) d): the step beta d has quadratic-model KL equal to delta.

    :return: beta, or None when the curvature is non-finite or non-positive (then no step is taken)
    """
    if not (math.isfinite(curvature) and curvature > 0.0):
        return None
    beta = math.sqrt(2.0 * target_kl / curvature)
    return beta if math.isfinite(beta) else None


@dataclass(frozen=True)
class ProposedStep:
    """
    The natural-gradient step of docs/algorithm.md §5, before the step rule decides how much of it to take (§6).

    :param full_step: beta * d
    :param expected_improvement: g^T beta d, the surrogate's improvement in the linear model
    :param surrogate_before: L(theta_old)
    :param target_kl: delta, this update's trust region (``target_kl`` or its schedule's value now)
    """

    full_step: th.Tensor
    expected_improvement: float
    surrogate_before: float
    target_kl: float


@dataclass(frozen=True)
class UpdateStatistics:
    """One update's statistics, logged under ``train/`` with these names (None: not logged); the diagnostics of the
    step's inner workings (:data:`DIAGNOSTICS`) go to every output but the console's table, which stays as short as
    SB3's."""

    policy_objective: float
    surrogate_improvement: float
    expected_improvement: float
    kl_divergence: float
    max_kl: float
    kl_before: float
    target_kl: float
    step_size: float
    line_search_steps: int | None
    is_line_search_success: float | None
    cg_iterations: int
    cg_residual: float
    grad_norm: float
    entropy: float
    value_loss: float | None
    explained_variance: float
    std: float | None

    def record(self, logger: Logger) -> None:
        for name, value in asdict(self).items():
            if value is not None:
                logger.record(f"train/{name}", value, exclude="stdout" if name in DIAGNOSTICS else None)


#: The statistics logged to TensorBoard, CSV and JSON but not to the console: how the step was found and how it
#: compares with its models (the console shows the objective, the KL taken, the step size and the critic's fit).
DIAGNOSTICS = frozenset(
    {"surrogate_improvement", "expected_improvement", "max_kl", "kl_before", "target_kl", "line_search_steps",
     "cg_iterations", "cg_residual", "grad_norm"}
)  # fmt: skip


def numerical_fault(policy_gradient: th.Tensor, beta: float | None, search: StepResult) -> str | None:
    """
    Why the policy step could not be taken, when a number went wrong; None for a sound (if rejected) step
    (docs/algorithm.md §8). ``beta`` is None when :func:`max_step_size` refused the curvature.
    """
    if not th.isfinite(policy_gradient).all():
        return "the policy gradient is not finite"
    if beta is None:
        return "the curvature d^T (F + lambda I) d is not finite and positive (zero gradient or failed Fisher products)"
    if search.n_evaluated > 0 and search.n_nonfinite == search.n_evaluated:
        return "every line-search candidate had a non-finite surrogate or KL"
    return None


def distribution_actions(actions: th.Tensor, action_space: gym.Space) -> th.Tensor:
    """The buffer's actions as the distribution takes them: a Discrete space's float column as integer indices."""
    if isinstance(action_space, gym.spaces.Discrete):
        return actions.long().flatten()
    return actions


def cloned(state: Any) -> Any:
    """A copy of a state dict, its tensors cloned (copy.deepcopy's per-object bookkeeping costs more, every update)."""
    if isinstance(state, th.Tensor):
        return state.clone()
    if type(state) in (dict, OrderedDict):
        copied = type(state)((key, cloned(value)) for key, value in state.items())
        if hasattr(state, "__dict__"):  # a module state dict's _metadata
            copied.__dict__.update(copy.deepcopy(state.__dict__))
        return copied
    if type(state) in (list, tuple):
        return type(state)(cloned(value) for value in state)
    return copy.deepcopy(state)


@contextmanager
def undone_on_exception(algorithm: OnPolicyAlgorithm) -> Iterator[None]:
    """Restore the policy, its optimiser and the update count if the block does not finish (KeyboardInterrupt too)."""
    policy_state = cloned(algorithm.policy.state_dict())
    optimizer_state = cloned(algorithm.policy.optimizer.state_dict())
    n_updates = algorithm._n_updates
    try:
        yield
    except BaseException:
        algorithm.policy.load_state_dict(policy_state)
        algorithm.policy.optimizer.load_state_dict(optimizer_state)
        algorithm._n_updates = n_updates
        raise
