"""The natural policy gradient (NPG) as a Stable-Baselines3 on-policy algorithm."""

from sb3_trpo_ext.line_search import LineSearchResult
from sb3_trpo_ext.natural_gradient import NaturalGradientAlgorithm
from sb3_trpo_ext.update import PolicyBatch, ProposedStep


class NPG(NaturalGradientAlgorithm):
    """
    Natural Policy Gradient (NPG): the step beta * d along the natural gradient d = (F + lambda I)^-1 g, with
    beta = sqrt(2 delta / d^T (F + lambda I) d), taken as it is, without a line search.

    Paper: Kakade, "A Natural Policy Gradient" (NeurIPS 2001); the normalised step size is that of Rajeswaran et al.,
    "Towards Generalization and Simplicity in Continuous Control" (2017). The update is TRPO's (docs/algorithm.md §1-§5,
    §7) up to the step: ``target_kl`` is the KL the quadratic model predicts, not a bound. The KL the step actually
    took is logged (``train/kl_divergence``, ``train/max_kl``); without a line search it can exceed ``target_kl``
    where the model is poor. A step whose surrogate or KL is not finite is not taken (docs/algorithm.md §8).

    The parameters are :class:`~sb3_trpo_ext.natural_gradient.NaturalGradientAlgorithm`'s.
    """

    def _policy_step(self, batch: PolicyBatch, proposed: ProposedStep) -> LineSearchResult:
        """theta_old + beta d, measured (surrogate, mean and largest KL) and taken whatever it measures, if finite."""
        step = proposed.full_step
        if step is None:
            return LineSearchResult.rejected(proposed.theta_old, n_candidates=0)
        candidate = self._candidate(batch, proposed.theta_old, step)
        if not candidate.is_finite:
            return LineSearchResult.rejected(step, n_candidates=1, n_nonfinite=1)
        return LineSearchResult(True, step, 1.0, 1, candidate)
