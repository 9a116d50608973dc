"""The natural policy gradient (NPG) as a Stable-Baselines3 on-policy algorithm."""

from sb3_trpo_ext.natural_gradient import NaturalGradientAlgorithm
from sb3_trpo_ext.step_rules import WholeStep


class NPG(NaturalGradientAlgorithm):
    """
    Natural Policy Gradient (NPG): the step beta * d along the natural gradient d = (F + lambda I)^-1 g, with
    beta = sqrt(2 delta / d^T (F + lambda I) d), taken as it is, without a line search.

    Paper: Kakade, "A Natural Policy Gradient" (NeurIPS 2001); the normalised step size is that of Rajeswaran et al.,
    "Towards Generalization and Simplicity in Continuous Control" (2017). The update is TRPO's (docs/algorithm.md §1-§5,
    §7) up to the step: ``target_kl`` is the KL the quadratic model predicts, not a bound. The KL the step actually
    took is logged (``train/kl_divergence``, ``train/max_kl``); without a line search it can exceed ``target_kl``
    where the model is poor. A step whose surrogate or KL is not finite is not taken (docs/algorithm.md §8).

    :param target_kl: The trust-region radius delta: the mean KL(pi_old || pi_new) the quadratic model predicts for
        the step, not a bound (the KL the step took is logged and can exceed it), with the KL of the whole action
        distribution (summed over action dimensions); it can be a function of the current progress remaining (from 1
        to 0), like ``learning_rate``, whose value may fall to 0 (no step)
    """

    step_rule = WholeStep()
