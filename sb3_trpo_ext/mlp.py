"""
MLP networks (Linear layers, each followed by tanh, ReLU or nothing) evaluated and differentiated layer by layer.

SB3's MlpPolicy maps features to the action distribution's parameters and to the value through such networks.
TRPO evaluates them on small inputs thousands of times per update (an action per rollout step, the critic's minibatch
steps, the Fisher-vector products of conjugate gradient), where nn.Module calls, torch.distributions' checks and the
autograd engine cost several times the arithmetic.
Here the same arithmetic runs as a plain sequence of kernels: the forward pass keeps each layer's output, and the
derivatives reuse them through the kernels autograd itself uses (tanh_backward: g (1 - y^2); threshold_backward:
g [y > 0]), so no activation is evaluated twice and every derivative is the one autograd would compute from the
outputs. On the CPU, tanh itself is numpy's kernel (:func:`tanh`).

Notation for a network of layers l = 1..L: x_0 the input, x_l = act_l(W_l x_{l-1} + b_l), output x_L.
"""

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, MlpExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn
from torch.nn import functional as F

from sb3_trpo_ext.torch_private import relu_chain_rule, tanh_chain_rule

Activation = Callable[[th.Tensor], th.Tensor]
#: (g, y) -> g * act'(x) for y = act(x): the chain rule through an activation, from its output.
ActivationChainRule = Callable[[th.Tensor, th.Tensor], th.Tensor]


def tanh(pre: th.Tensor) -> th.Tensor:
    """
    tanh of a pre-activation the caller owns and does not read again, in place. On the CPU it runs numpy's kernel,
    which on a minibatch costs a fifth of torch's there; both are within a unit in the last place of the exact value,
    so they can differ in the last bit.
    """
    if pre.device.type == "cpu" and pre.dtype in (th.float32, th.float64) and pre.is_contiguous() and not pre.requires_grad:
        values = pre.numpy()
        np.tanh(values, out=values)
        return pre
    return th.tanh(pre)


def _relu_in_place(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.maximum(x, _ZERO, out=out)


_ZERO = np.float32(0)


#: The activations' numpy kernels on CPU arrays, ``act(x, out=x)`` in place (None for a layer without one): the layers
#: of an MLP network evaluated in numpy (the rollout's actor, the critic's fit) compute what its torch layers compute,
#: to rounding.
NUMPY_ACTIVATIONS: dict[Activation | None, Callable[..., np.ndarray] | None] = {
    tanh: np.tanh,
    th.relu: _relu_in_place,
    None: None,
}


ACTIVATIONS: dict[type[nn.Module], tuple[Activation, ActivationChainRule]] = {
    nn.Tanh: (tanh, tanh_chain_rule()),
    nn.ReLU: (th.relu, relu_chain_rule()),
}


#: Action distributions that are a function of the action network's output (and a state-independent log-std).
OUTPUT_DISTRIBUTIONS = (
    DiagGaussianDistribution,
    CategoricalDistribution,
    MultiCategoricalDistribution,
    BernoulliDistribution,
)


@dataclass(frozen=True)
class MlpLayer:
    """x -> act(W x + b); ``activation`` and its ``chain_rule`` are None for no activation."""

    weight: th.Tensor
    bias: th.Tensor | None
    activation: Activation | None
    chain_rule: ActivationChainRule | None


class MlpNetwork:
    """
    A chain of :class:`MlpLayer` sharing its parameters with the modules it was read from.

    ``forward`` returns the outputs x_0..x_L of every layer; ``jacobian_vector_product`` and
    ``vector_jacobian_product`` take them back, so the network is evaluated once per batch however many
    products follow.
    """

    def __init__(self, layers: Sequence[MlpLayer]) -> None:
        self.layers = tuple(layers)

    @property
    def parameters(self) -> list[th.Tensor]:
        """W_1, b_1, ..., W_L, b_L (absent biases left out): the order of every gradient returned here."""
        return [param for layer in self.layers for param in (layer.weight, layer.bias) if param is not None]

    def forward(self, inputs: th.Tensor) -> list[th.Tensor]:
        """x_0, x_1, ..., x_L for a batch of inputs x_0 of shape (n, in_features), without autograd."""
        outputs = [inputs]
        with _autograd_off():
            for layer in self.layers:
                pre = F.linear(outputs[-1], layer.weight, layer.bias)
                outputs.append(pre if layer.activation is None else layer.activation(pre))
        return outputs

    def jacobian_vector_product(self, outputs: Sequence[th.Tensor], tangent: Sequence[th.Tensor]) -> th.Tensor:
        """
        J v: the change of x_L along a change ``tangent`` of the parameters (in the order of ``parameters``),
        dx_l = act_l'(.) (W_l dx_{l-1} + dW_l x_{l-1} + db_l), dx_0 = 0.
        """
        with _autograd_off():
            tangents = iter(tangent)
            d_x: th.Tensor | None = None
            for layer, x, y in zip(self.layers, outputs[:-1], outputs[1:], strict=True):
                d_weight = next(tangents)
                d_pre = F.linear(x, d_weight, None if layer.bias is None else next(tangents))
                if d_x is not None:
                    d_pre = th.addmm(d_pre, d_x, layer.weight.t())
                d_x = d_pre if layer.chain_rule is None else layer.chain_rule(d_pre, y)
        assert d_x is not None
        return d_x

    def vector_jacobian_product(self, outputs: Sequence[th.Tensor], cotangent: th.Tensor) -> list[th.Tensor]:
        """
        J^T u: the gradient of sum(u * x_L) with respect to the parameters (in the order of ``parameters``),
        by backpropagation through the stored outputs; the input's own gradient is never formed.
        """
        grads: list[th.Tensor] = []
        with _autograd_off():
            d_x = cotangent
            for index in range(len(self.layers) - 1, -1, -1):
                layer, x, y = self.layers[index], outputs[index], outputs[index + 1]
                d_pre = d_x if layer.chain_rule is None else layer.chain_rule(d_x, y)
                if layer.bias is not None:
                    grads.append(d_pre.sum(dim=0))
                grads.append(th.mm(d_pre.t(), x))
                if index > 0:
                    d_x = th.mm(d_pre, layer.weight)
        return grads[::-1]


def _autograd_off() -> AbstractContextManager:
    """no_grad, where autograd is on: entering it costs more than a small kernel, and the rollout and the critic's fit
    call these products by the thousand under no_grad or inference mode already."""
    return th.no_grad() if th.is_grad_enabled() else nullcontext()


def mlp_network(modules: Sequence[nn.Module]) -> MlpNetwork | None:
    """The modules (nn.Sequential unpacked) as a :class:`MlpNetwork`, or None if they are anything else."""
    # Exact types only: a subclass may compute something else in its forward.
    flat: list[nn.Module] = []
    for module in modules:
        flat.extend(module if type(module) is nn.Sequential else [module])
    layers = []
    for module in flat:
        if type(module) is nn.Linear:
            layers.append(MlpLayer(module.weight, module.bias, None, None))
        elif type(module) in ACTIVATIONS and layers and layers[-1].activation is None:
            activation, chain_rule = ACTIVATIONS[type(module)]
            layers[-1] = MlpLayer(layers[-1].weight, layers[-1].bias, activation, chain_rule)
        else:
            return None
    return MlpNetwork(layers) if layers else None


def _reads_features_by_mlp(policy: ActorCriticPolicy) -> bool:
    """Whether the policy computes its latents with SB3's own MlpExtractor and ActorCriticPolicy's methods."""
    return (
        type(policy.mlp_extractor) is MlpExtractor
        and type(policy).get_distribution is ActorCriticPolicy.get_distribution
        and type(policy).predict_values is ActorCriticPolicy.predict_values
        and type(policy).forward is ActorCriticPolicy.forward
    )


def actor_network(policy: ActorCriticPolicy, actor_params: Sequence[th.Tensor]) -> MlpNetwork | None:
    """
    features -> the action network's output (the Gaussian's mean, or the logits), when that is an MLP network
    holding every actor parameter but the Gaussian's log-std and the action distribution depends on nothing
    else; None otherwise (CNN or custom policies, gSDE).
    """
    if not _reads_features_by_mlp(policy) or type(policy.action_dist) not in OUTPUT_DISTRIBUTIONS:
        return None
    network = mlp_network([policy.mlp_extractor.policy_net, policy.action_net])
    if network is None:
        return None
    covered = {id(param) for param in network.parameters}
    if hasattr(policy, "log_std") and isinstance(policy.log_std, nn.Parameter):
        covered.add(id(policy.log_std))
    return network if covered == {id(param) for param in actor_params} else None


def critic_network(policy: ActorCriticPolicy, critic_params: Sequence[th.Tensor]) -> MlpNetwork | None:
    """features -> value, when that is an MLP network holding exactly the critic's parameters; None otherwise."""
    if not _reads_features_by_mlp(policy):
        return None
    network = mlp_network([policy.mlp_extractor.value_net, policy.value_net])
    if network is None or {id(p) for p in network.parameters} != {id(p) for p in critic_params}:
        return None
    return network


def action_distribution(policy: ActorCriticPolicy, output: th.Tensor) -> Distribution:
    """The policy's action distribution from :func:`actor_network`'s output, as ActorCriticPolicy builds it."""
    if isinstance(policy.action_dist, DiagGaussianDistribution):
        return policy.action_dist.proba_distribution(output, policy.log_std)
    return policy.action_dist.proba_distribution(action_logits=output)


def actor_features(policy: ActorCriticPolicy, observations: PyTorchObs) -> th.Tensor:
    """The input of :func:`actor_network`: the observations preprocessed and through the actor's features extractor."""
    return _features(policy, observations, policy.pi_features_extractor)


def critic_features(policy: ActorCriticPolicy, observations: PyTorchObs) -> th.Tensor:
    """The input of :func:`critic_network`: the observations preprocessed and through the critic's features extractor."""
    return _features(policy, observations, policy.vf_features_extractor)


def _features(policy: ActorCriticPolicy, observations: PyTorchObs, extractor: BaseFeaturesExtractor) -> th.Tensor:
    if (
        type(extractor) is FlattenExtractor
        and isinstance(policy.observation_space, spaces.Box)
        and len(policy.observation_space.shape) == 1
        and isinstance(observations, th.Tensor)
        and observations.dim() == 2
    ):
        # A vector observation is preprocessed to float and flattening a batch of vectors keeps it as it is.
        return observations.float()
    with th.no_grad():
        return BasePolicy.extract_features(policy, observations, extractor)
