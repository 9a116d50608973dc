"""KL divergence of the action distribution and Fisher-vector products (docs/algorithm.md §2 and §4).

The KL here is that of the *whole* action distribution: for factorised actions (diagonal Gaussian,
MultiBinary, MultiDiscrete) it is the sum over action dimensions, so ``target_kl`` is the real trust region.

Two ways to multiply by the Fisher information F of the mean KL, behind one function,
:func:`fisher_vector_product`:

* ``"analytic"``: the Gauss-Newton form F v = (1/N) sum_n J_n^T M_n J_n v, where z_n are the distribution
  parameters the network outputs for state n, J_n = dz_n/dtheta and M_n the closed-form Fisher of the
  distribution in z. One forward-mode product (J v) and one reverse-mode product (J^T u) per call: written out
  layer by layer for SB3's MLP actors (:mod:`sb3_trpo_ext.mlp`, the network evaluated once for all products),
  through torch's forward-mode AD and autograd for any other actor.
* ``"autograd"``: Pearlmutter's double backprop, F v = d/dtheta (grad KL . v). It works for any
  distribution with a KL (gSDE, custom distributions).
"""

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.distributions import (
    MaskableCategoricalDistribution,
    MaskableMultiCategoricalDistribution,
)
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn
from torch.autograd import forward_ad

from sb3_trpo_ext.mlp import OUTPUT_DISTRIBUTIONS, MlpNetwork, actor_features
from sb3_trpo_ext.policies import ActorCritic, PolicyInputs, torch_distributions, unflatten
from sb3_trpo_ext.torch_private import PrivateApiChanged, parameter_slots, parameters_replaced

FVP_METHODS = ("auto", "analytic", "autograd")

#: Distributions whose Fisher in their own parameters is known in closed form: those SB3 builds from the action
#: network's output and a state-independent log-std, and sb3-contrib's masked categoricals.
ANALYTIC_DISTRIBUTIONS = (*OUTPUT_DISTRIBUTIONS, MaskableCategoricalDistribution, MaskableMultiCategoricalDistribution)

#: Distributions made of one categorical per sub-space (a masked MultiBinary space is one of two-way categoricals).
MULTI_CATEGORICAL = (MultiCategoricalDistribution, MaskableMultiCategoricalDistribution)

FisherVectorProduct = Callable[[th.Tensor], th.Tensor]


def kl_divergence(old: Distribution, new: Distribution) -> th.Tensor:
    """
    KL(old || new) per state, summed over action dimensions (docs/algorithm.md §2).

    :param old: action distribution at theta_old (usually detached)
    :param new: action distribution at theta, for the same states
    :return: tensor of shape (n_states,)
    """
    if isinstance(old, MULTI_CATEGORICAL):
        pairs = zip(torch_distributions(old), torch_distributions(new), strict=True)
        return sum(th.distributions.kl_divergence(p, q) for p, q in pairs)  # type: ignore[return-value]
    kl = th.distributions.kl_divergence(old.distribution, new.distribution)  # type: ignore[arg-type]
    # Categorical gives one value per state; factorised distributions one per action dimension.
    return kl.sum(dim=-1) if kl.dim() > 1 else kl


def kl_averaged_dimensions(action_space: spaces.Space) -> int:
    """
    How many terms sb3-contrib's TRPO averages its KL over per state: the action dimensions of a Gaussian or
    Bernoulli policy (its real KL is this many times its target_kl), 1 for categorical ones (summed already);
    docs/algorithm.md §9.
    """
    if isinstance(action_space, (spaces.Box, spaces.MultiBinary)):
        return int(np.prod(action_space.shape))
    return 1


def distribution_parameters(distribution: Distribution) -> tuple[th.Tensor, ...]:
    """
    The parameters z of an action distribution in which its Fisher M is known in closed form:
    (mean, log-std) for a diagonal Gaussian, the logits otherwise (one tensor per categorical of a
    MultiDiscrete space; masked actions have logits of about -1e8, probability 0).
    """
    if isinstance(distribution, DiagGaussianDistribution):
        normal = distribution.distribution
        return normal.loc, normal.scale.log()
    if isinstance(distribution, MULTI_CATEGORICAL):
        return tuple(categorical.logits for categorical in torch_distributions(distribution))  # type: ignore[attr-defined]
    if isinstance(distribution, (CategoricalDistribution, BernoulliDistribution, MaskableCategoricalDistribution)):
        return (distribution.distribution.logits,)
    raise TypeError(f"No closed-form Fisher for {type(distribution).__name__}")


def distribution_fisher(
    distribution: Distribution, parameters: Sequence[th.Tensor]
) -> Callable[[Sequence[th.Tensor]], tuple[th.Tensor, ...]]:
    """
    u -> M_n u_n for every state n: the Fisher of the distribution in its own parameters z, at theta_old
    (docs/algorithm.md §4).
    What M depends on (1/sigma^2, the probabilities) is computed here once, not at every product of CG.

    * diagonal Gaussian (mean mu, log-std l): M_mu = diag(1/sigma^2), M_l = 2 I, no cross terms;
    * categorical with logits: M = diag(p) - p p^T (also for torch's normalised logits, since M 1 = 0); a masked
      action has p = 0, so its row and column of M are zero: it adds nothing to the Fisher;
    * Bernoulli with logits: M = diag(p (1 - p)).

    :param distribution: the distribution at theta_old (only its type is read)
    :param parameters: z at theta_old, as returned by :func:`distribution_parameters`
    :return: the product, taking u as one tensor per entry of ``parameters``
    """
    if isinstance(distribution, DiagGaussianDistribution):
        inverse_variance = th.exp(-2.0 * parameters[1])

        def gaussian(tangent: Sequence[th.Tensor]) -> tuple[th.Tensor, ...]:
            d_mean, d_log_std = tangent
            return d_mean * inverse_variance, 2.0 * d_log_std

        return gaussian
    if isinstance(distribution, (CategoricalDistribution, MaskableCategoricalDistribution, *MULTI_CATEGORICAL)):
        probabilities = [th.softmax(logits, dim=-1) for logits in parameters]

        def categorical(tangent: Sequence[th.Tensor]) -> tuple[th.Tensor, ...]:
            return tuple(p * u - p * (p * u).sum(dim=-1, keepdim=True) for p, u in zip(probabilities, tangent, strict=True))

        return categorical
    if isinstance(distribution, BernoulliDistribution):
        p = th.sigmoid(parameters[0])
        weight = p * (1.0 - p)
        return lambda tangent: (weight * tangent[0],)
    raise TypeError(f"No closed-form Fisher for {type(distribution).__name__}")


def supports_analytic_fisher(distribution: Distribution) -> bool:
    """Whether the Gauss-Newton form applies (gSDE and custom distributions use double backprop)."""
    return isinstance(distribution, ANALYTIC_DISTRIBUTIONS)


def flat_grad(output: th.Tensor, params: Sequence[nn.Parameter], **kwargs) -> th.Tensor:
    """Gradient of a scalar with respect to ``params``, flattened into one vector (zeros where unused)."""
    grads = th.autograd.grad(output, params, materialize_grads=True, **kwargs)
    return th.cat([grad.reshape(-1) for grad in grads])


def fisher_vector_product(
    policy: ActorCritic,
    inputs: PolicyInputs,
    params: Sequence[nn.Parameter],
    method: str = "auto",
    damping: float = 0.0,
    network: MlpNetwork | None = None,
    swap_parameters: bool = True,
) -> FisherVectorProduct:
    """
    v -> (F + damping I) v, F the Fisher of the mean KL over the batch ``inputs`` with respect to ``params``,
    at the policy's current parameters (theta_old). F is never formed.

    :param policy: the actor-critic policy
    :param inputs: what the policy reads on the states of the (possibly sub-sampled) batch
    :param params: the actor parameters, in the order of the flat vectors
    :param method: "analytic" (Gauss-Newton form), "autograd" (double backprop) or "auto"
        (analytic where the distribution allows it)
    :param damping: lambda, added as lambda v
    :param network: the actor as an MLP network (:func:`~sb3_trpo_ext.mlp.actor_network`): the analytic products
        then run layer by layer on one evaluation of it; None takes forward-mode AD and autograd
    :param swap_parameters: whether the analytic form may swap parameters through torch's private API (forward-mode
        AD on actors other than ``network``); False takes the same Fisher by double backprop there
    """
    if method not in FVP_METHODS:
        raise ValueError(f"fvp_method must be one of {FVP_METHODS}, got {method!r}")
    analytic = supports_analytic_fisher(policy.action_dist)
    if method == "analytic" and not analytic:
        raise ValueError(
            f"fvp_method='analytic' needs one of {[d.__name__ for d in ANALYTIC_DISTRIBUTIONS]}, "
            f"got {type(policy.action_dist).__name__}; use 'autograd' or 'auto'"
        )
    product = None
    # An RNN keeps references to its weights of its own, which swapping the module's parameters does not reach: its
    # analytic products take the same Fisher by double backprop.
    swappable = not any(isinstance(module, nn.RNNBase) for module in policy.modules())
    if method != "autograd" and analytic:
        if network is not None:
            assert isinstance(policy, ActorCriticPolicy) and inputs.action_masks is None, "an MLP network is SB3's policy's"
            product = _mlp_gauss_newton_product(policy, network, inputs.observations, params)
        elif swappable and swap_parameters:
            try:
                product = _gauss_newton_product(policy, inputs, params)
            except PrivateApiChanged:
                pass  # the same Fisher by the public double backprop below: slower, as exact
    if product is None:
        product = _double_backprop_product(policy, inputs, params)
    if damping == 0.0:
        return product
    return lambda vector: product(vector) + damping * vector


def _gauss_newton_product(policy: ActorCritic, inputs: PolicyInputs, params: Sequence[nn.Parameter]) -> FisherVectorProduct:
    slots = parameter_slots(policy, params)
    # z(theta_old) with its graph, kept for the reverse-mode products J^T u.
    old_distribution = inputs.distribution(policy)
    z_old = distribution_parameters(old_distribution)
    n_states = z_old[0].shape[0]
    fisher = distribution_fisher(old_distribution, tuple(z.detach() for z in z_old))

    def product(vector: th.Tensor) -> th.Tensor:
        tangent = unflatten(vector, params)
        # J v: one forward pass with dual numbers, theta_old + eps v.
        with forward_ad.dual_level():
            duals = [forward_ad.make_dual(param.detach(), t) for param, t in zip(params, tangent, strict=True)]
            with parameters_replaced(slots, duals):
                z_dual = distribution_parameters(inputs.distribution(policy))
            jacobian_vector = tuple(forward_ad.unpack_dual(z).tangent for z in z_dual)
        fisher_jv = fisher(jacobian_vector)
        grads = th.autograd.grad(z_old, params, [u / n_states for u in fisher_jv], retain_graph=True, materialize_grads=True)
        return th.cat([grad.reshape(-1) for grad in grads])

    return product


def _mlp_gauss_newton_product(
    policy: ActorCriticPolicy, network: MlpNetwork, observations: PyTorchObs, params: Sequence[nn.Parameter]
) -> FisherVectorProduct:
    distribution = policy.action_dist
    gaussian = isinstance(distribution, DiagGaussianDistribution)
    features = actor_features(policy, observations)
    outputs = network.forward(features)
    n_states = len(features)
    # Where each of the network's parameters (and the Gaussian's log-std) sits in the flat vectors.
    position = {id(param): index for index, param in enumerate(params)}
    network_slots = [position[id(param)] for param in network.parameters]

    def distribution_parameters_of(output: th.Tensor, log_std: th.Tensor | None) -> tuple[th.Tensor, ...]:
        if gaussian:
            assert log_std is not None
            return output, log_std.expand_as(output)
        if isinstance(distribution, MultiCategoricalDistribution):
            return output.split(list(distribution.action_dims), dim=1)
        return (output,)

    log_std = policy.log_std.detach() if gaussian else None
    fisher = distribution_fisher(distribution, distribution_parameters_of(outputs[-1], log_std))
    log_std_slot = position[id(policy.log_std)] if gaussian else -1

    def product(vector: th.Tensor) -> th.Tensor:
        tangent = unflatten(vector, params)
        jacobian_vector = network.jacobian_vector_product(outputs, [tangent[slot] for slot in network_slots])
        u = fisher(distribution_parameters_of(jacobian_vector, tangent[log_std_slot] if gaussian else None))
        # J^T u / N; the log-std is shared by all states, so its part of J^T sums over them.
        grads = [th.empty(0)] * len(params)
        cotangent = u[0] if len(u) == 1 or gaussian else th.cat(u, dim=1)
        for slot, grad in zip(network_slots, network.vector_jacobian_product(outputs, cotangent / n_states), strict=True):
            grads[slot] = grad
        if gaussian:
            grads[log_std_slot] = u[1].sum(dim=0) / n_states
        return th.cat([grad.reshape(-1) for grad in grads])

    return product


def _double_backprop_product(policy: ActorCritic, inputs: PolicyInputs, params: Sequence[nn.Parameter]) -> FisherVectorProduct:
    with th.no_grad():
        old_distribution = copy.copy(inputs.distribution(policy))
    mean_kl = kl_divergence(old_distribution, inputs.distribution(policy)).mean()
    grad_kl = flat_grad(mean_kl, params, create_graph=True)

    def product(vector: th.Tensor) -> th.Tensor:
        return flat_grad(grad_kl @ vector, params, retain_graph=True)

    return product
