"""Small environments and independent dense computations shared by the tests."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback

#: A small policy, CG run to convergence and no critic fit: one update is then the dense step to test precision.
DENSE_SETTINGS = dict(
    n_steps=64,
    batch_size=64,
    policy_kwargs=dict(net_arch=dict(pi=[8], vf=[8])),
    cg_max_steps=400,
    cg_residual_tol=1e-7,
    cg_damping=0.1,
    target_kl=0.01,
    n_critic_updates=0,
    seed=1,
)

ACTION_SPACES = {
    "discrete": spaces.Discrete(3),
    "box1": spaces.Box(-1.0, 1.0, (1,), np.float32),
    "box3": spaces.Box(-1.0, 1.0, (3,), np.float32),
    "multidiscrete": spaces.MultiDiscrete([3, 2, 4]),
    "multibinary": spaces.MultiBinary(3),
}


class ToyEnv(gym.Env):
    """Random observations; the reward depends on observation and action, so advantages carry signal."""

    def __init__(self, action_space: spaces.Space, observation: str = "vector", episode_length: int = 16):
        super().__init__()
        self.action_space = action_space
        self.episode_length = episode_length
        vector = spaces.Box(-1.0, 1.0, (4,), np.float32)
        image = spaces.Box(0, 255, (36, 36, 1), np.uint8)
        self.observation_space = {
            "vector": vector,
            "image": image,
            "dict": spaces.Dict({"vector": vector, "index": spaces.Discrete(3)}),
            "index": spaces.Discrete(5),
        }[observation]
        self._t = 0

    def _observation(self):
        return self.observation_space.sample()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        self._t = 0
        self._obs = self._observation()
        return self._obs, {}

    def step(self, action):
        signal = np.asarray(self._obs["vector"] if isinstance(self._obs, dict) else self._obs, dtype=np.float64).ravel()
        reward = float(signal[0] * np.sum(np.asarray(action, dtype=np.float64)) + 0.1 * signal[1 % len(signal)])
        self._t += 1
        self._obs = self._observation()
        return self._obs, reward, False, self._t >= self.episode_length, {}


def collect_rollout(model) -> None:
    """Fill the model's rollout buffer once, as learn() would before train()."""
    _, callback = model._setup_learn(model.n_steps * model.n_envs, None)
    callback.on_training_start(locals(), globals())
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)


class _DistributionOf(th.nn.Module):
    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, observations):
        return self.policy.get_distribution(observations)


def reference_kl(old, new) -> th.Tensor:
    """Per-state KL summed over action dimensions, written out per distribution type."""
    old_d, new_d = old.distribution, new.distribution
    if isinstance(old_d, list):
        return sum((p.probs * (p.logits - q.logits)).sum(-1) for p, q in zip(old_d, new_d, strict=True))
    if isinstance(old_d, th.distributions.Categorical):
        return (old_d.probs * (old_d.logits - new_d.logits)).sum(-1)
    if isinstance(old_d, th.distributions.Bernoulli):
        # log p = -softplus(-logit), log(1 - p) = -softplus(logit): finite for saturated probabilities too
        softplus = th.nn.functional.softplus
        p, lp, lq = old_d.probs, old_d.logits, new_d.logits
        return (p * (softplus(-lq) - softplus(-lp)) + (1 - p) * (softplus(lq) - softplus(lp))).sum(-1)
    mu0, s0, mu1, s1 = old_d.loc, old_d.scale, new_d.loc, new_d.scale
    return (th.log(s1 / s0) + (s0**2 + (mu0 - mu1) ** 2) / (2 * s1**2) - 0.5).sum(-1)


class DenseProblem:
    """The TRPO quantities at theta_old computed densely with torch.autograd.functional, for small policies."""

    def __init__(self, policy, params, observations, actions, advantages, ent_coef=0.0):
        self.policy, self.params, self.ent_coef = policy, params, ent_coef
        self.observations, self.actions, self.advantages = observations, actions, advantages
        names = {id(p): f"policy.{n}" for n, p in policy.named_parameters()}
        self.keys = [names[id(p)] for p in params]
        self.module = _DistributionOf(policy)
        self.theta0 = th.cat([p.detach().reshape(-1) for p in params])
        with th.no_grad():
            self.old = copy.copy(policy.get_distribution(observations))
            self.old_log_prob = self.old.log_prob(actions)

    def distribution(self, theta: th.Tensor, observations=None):
        chunks = theta.split([p.numel() for p in self.params])
        tensors = {k: c.view_as(p) for k, c, p in zip(self.keys, chunks, self.params, strict=True)}
        obs = self.observations if observations is None else observations
        return th.func.functional_call(self.module, tensors, (obs,))

    def mean_kl(self, theta: th.Tensor, observations=None) -> th.Tensor:
        with th.no_grad():
            old = copy.copy(self.distribution(self.theta0, observations))
        return reference_kl(old, self.distribution(theta, observations)).mean()

    def surrogate(self, theta: th.Tensor) -> th.Tensor:
        distribution = self.distribution(theta)
        log_prob = distribution.log_prob(self.actions)
        return (self.advantages * th.exp(log_prob - self.old_log_prob)).mean() + self.ent_coef * distribution.entropy().mean()

    def fisher(self, observations=None) -> th.Tensor:
        return th.autograd.functional.hessian(lambda t: self.mean_kl(t, observations), self.theta0)

    def gradient(self) -> th.Tensor:
        return th.autograd.functional.jacobian(self.surrogate, self.theta0)

    def trpo_step(self, damping: float, target_kl: float) -> th.Tensor:
        """beta (F + lambda I)^-1 g, with beta = sqrt(2 delta / d^T (F + lambda I) d)."""
        a = self.fisher().double() + damping * th.eye(self.theta0.numel(), dtype=th.float64)
        g = self.gradient().double()
        d = th.linalg.solve(a, g)
        return (th.sqrt(2 * target_kl / (d @ a @ d)) * d).float()

    def line_search_fraction(self, full_step, target_kl, shrinking_factor, max_iter, accept_ratio):
        """alpha^j of the first candidate theta0 + alpha^j full_step the line search must accept (0: none)."""
        with th.no_grad():
            surrogate_before = float(self.surrogate(self.theta0))
            expected = float(self.gradient() @ full_step)
            for j in range(max_iter):
                fraction = shrinking_factor**j
                theta = self.theta0 + fraction * full_step
                improvement = float(self.surrogate(theta)) - surrogate_before
                if (
                    float(self.mean_kl(theta)) <= target_kl
                    and improvement > 0
                    and improvement >= accept_ratio * fraction * expected
                ):
                    return fraction
        return 0.0

    def assert_update_is_the_dense_step(self, model) -> float:
        """
        Run ``model.train()`` and check its step against the dense step beta (F + lambda I)^-1 g: the same direction,
        and the length of the candidate the line search must take judged on the dense quantities (not any other power
        of alpha), or the whole step without a line search (NPG). Returns the dense mean KL after the step.
        """
        dense_step = self.trpo_step(model.cg_damping, model.target_kl)
        fraction = 1.0
        if model.step_rule.hyperparameters:  # a line search
            fraction = self.line_search_fraction(
                dense_step,
                model.target_kl,
                model.line_search_shrinking_factor,
                model.line_search_max_iter,
                model.line_search_accept_ratio,
            )
            assert fraction > 0
        model.train()
        theta = th.cat([p.detach().reshape(-1) for p in self.params])
        step = theta - self.theta0
        assert float(step @ dense_step / (step.norm() * dense_step.norm())) >= 0.999
        assert float(step.norm() / dense_step.norm()) == pytest.approx(fraction, rel=1e-3)
        return float(self.mean_kl(theta))


class StopAfter(BaseCallback):
    """Returns False from on_step after ``n_calls`` calls: learning must stop there."""

    def __init__(self, n_calls: int):
        super().__init__()
        self.limit = n_calls

    def _on_step(self) -> bool:
        return self.n_calls < self.limit


class MaskedToyEnv(ToyEnv):
    """ToyEnv with random action masks (each sub-space keeps at least one allowed action), read by action_masks()."""

    def __init__(self, action_space: spaces.Space, observation: str = "vector"):
        super().__init__(action_space, observation)
        if isinstance(action_space, spaces.Discrete):
            self.mask_dims = [int(action_space.n)]
        elif isinstance(action_space, spaces.MultiDiscrete):
            self.mask_dims = [int(n) for n in action_space.nvec]
        else:
            self.mask_dims = [2] * int(action_space.n)  # MultiBinary: two choices per dimension

    def _observation(self):
        masks = []
        for n in self.mask_dims:
            mask = self.np_random.random(n) < 0.5
            mask[self.np_random.integers(n)] = True
            masks.append(mask)
        self._masks = np.concatenate(masks)
        return super()._observation()

    def action_masks(self) -> np.ndarray:
        return self._masks.copy()


class _ActionLogits(th.nn.Module):
    """observations -> the action network's output (all logits, before any mask) of a maskable MLP policy."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, observations):
        features = self.policy.extract_features(observations)
        if not self.policy.share_features_extractor:
            features = features[0]
        return self.policy.action_net(self.policy.mlp_extractor.forward_actor(features))


class MaskedDenseProblem(DenseProblem):
    """
    The TRPO quantities of a masked categorical policy computed densely over the allowed actions only: for each
    state and sub-space, the logits of the allowed actions and a log-softmax over them alone (sb3-contrib's masking
    plays no part).
    """

    def __init__(self, policy, params, observations, actions, advantages, masks, action_dims):
        self.policy, self.params, self.ent_coef = policy, params, 0.0
        self.observations, self.advantages = observations, advantages
        self.actions = actions.long().reshape(len(advantages), len(action_dims))
        self.masks, self.action_dims = masks.bool(), list(action_dims)
        names = {id(p): f"policy.{n}" for n, p in policy.named_parameters()}
        self.keys = [names[id(p)] for p in params]
        self.module = _ActionLogits(policy)
        self.theta0 = th.cat([p.detach().reshape(-1) for p in params])
        with th.no_grad():
            self.old_log_probs = [[lp.detach() for lp in state] for state in self.allowed_log_probs(self.theta0)]
            self.old_log_prob = self.log_prob_of_actions(self.allowed_log_probs(self.theta0))

    def allowed_log_probs(self, theta):
        """[state][sub-space] -> log-probabilities of that sub-space's allowed actions, in their order."""
        chunks = theta.split([p.numel() for p in self.params])
        tensors = {k: c.view_as(p) for k, c, p in zip(self.keys, chunks, self.params, strict=True)}
        logits = th.func.functional_call(self.module, tensors, (self.observations,))
        result = []
        for n in range(len(logits)):
            per_space = []
            for logit, mask in zip(logits[n].split(self.action_dims), self.masks[n].split(self.action_dims), strict=True):
                per_space.append(th.log_softmax(logit[mask], dim=0))
            result.append(per_space)
        return result

    def log_prob_of_actions(self, log_probs):
        values = []
        for n, per_space in enumerate(log_probs):
            total = 0.0
            for k, (lp, mask) in enumerate(zip(per_space, self.masks[n].split(self.action_dims), strict=True)):
                index = int(mask[: int(self.actions[n, k]) + 1].sum()) - 1  # the action's place among the allowed
                total = total + lp[index]
            values.append(total)
        return th.stack(values)

    def surrogate(self, theta):
        log_prob = self.log_prob_of_actions(self.allowed_log_probs(theta))
        return (self.advantages * th.exp(log_prob - self.old_log_prob)).mean()

    def mean_kl(self, theta, observations=None):
        assert observations is None
        kl = [
            sum((old.exp() * (old - new)).sum() for old, new in zip(old_state, new_state, strict=True))
            for old_state, new_state in zip(self.old_log_probs, self.allowed_log_probs(theta), strict=True)
        ]
        return th.stack(kl).mean()


class _UnrolledLstmPolicy(th.nn.Module):
    """
    A recurrent policy's action distribution on sequences, with its LSTM written out step by step from the gate
    equations (sb3-contrib's _process_sequence plays no part): reset to zero at episode starts, else carried on.
    """

    def __init__(self, policy, initial_states, episode_starts):
        super().__init__()
        self.policy = policy
        self.initial_states, self.episode_starts = initial_states, episode_starts  # (n_seq, size) each; (n_seq, length)

    def forward(self, observations):  # (n_seq, length, obs_dim)
        lstm = self.policy.lstm_actor
        w_ih, w_hh, b_ih, b_hh = lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0
        outputs = []
        for n in range(observations.shape[0]):
            h, c = self.initial_states[0][n], self.initial_states[1][n]
            for t in range(observations.shape[1]):
                if self.episode_starts[n, t]:
                    h, c = th.zeros_like(h), th.zeros_like(c)
                x = observations[n, t].float()
                i, f, g, o = (w_ih @ x + b_ih + w_hh @ h + b_hh).chunk(4)
                c = th.sigmoid(f) * c + th.sigmoid(i) * th.tanh(g)
                h = th.sigmoid(o) * th.tanh(c)
                outputs.append(h)
        latent = self.policy.mlp_extractor.forward_actor(th.stack(outputs))
        return self.policy._get_action_dist_from_latent(latent)


class SequenceDenseProblem(DenseProblem):
    """The TRPO quantities of a one-layer LSTM policy on whole sequences, computed densely with the unrolled LSTM."""

    def __init__(self, policy, params, observations, actions, advantages, initial_states, episode_starts):
        self.policy, self.params, self.ent_coef = policy, params, 0.0
        self.observations, self.actions, self.advantages = observations, actions, advantages
        names = {id(p): f"policy.{n}" for n, p in policy.named_parameters()}
        self.keys = [names[id(p)] for p in params]
        self.module = _UnrolledLstmPolicy(policy, initial_states, episode_starts)
        self.theta0 = th.cat([p.detach().reshape(-1) for p in params])
        with th.no_grad():
            self.old = copy.copy(self.distribution(self.theta0))
            self.old_log_prob = self.old.log_prob(actions)
