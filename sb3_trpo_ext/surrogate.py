"""The surrogate objective L(theta) (docs/algorithm.md §1)."""

import torch as th
from stable_baselines3.common.distributions import Distribution


def normalize_advantages(advantages: th.Tensor) -> th.Tensor:
    """Advantages with zero mean and unit standard deviation over the batch."""
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)


def mean_entropy(distribution: Distribution, log_prob: th.Tensor) -> th.Tensor:
    """Mean entropy of the action distribution over the batch; -mean log pi(a|s) estimates it where it has
    no closed form (squashed Gaussians)."""
    entropy = distribution.entropy()
    return -log_prob.mean() if entropy is None else entropy.mean()


def surrogate_objective(
    distribution: Distribution,
    actions: th.Tensor,
    old_log_prob: th.Tensor,
    advantages: th.Tensor,
    ent_coef: float = 0.0,
) -> th.Tensor:
    """
    L(theta) = mean(A * pi_theta(a|s) / pi_old(a|s)) + ent_coef * mean entropy of pi_theta.

    :param distribution: pi_theta on the batch's states
    :param actions: the batch's actions
    :param old_log_prob: log pi_old(a|s), detached
    :param advantages: the advantage estimates A
    :param ent_coef: the entropy bonus coefficient c
    """
    log_prob = distribution.log_prob(actions)
    objective = (advantages * th.exp(log_prob - old_log_prob)).mean()
    if ent_coef == 0.0:
        return objective
    return objective + ent_coef * mean_entropy(distribution, log_prob)
