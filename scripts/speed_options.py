"""Two speed options measured and not taken: conjugate gradient in float64, and torch.compile for the critic step.

    python scripts/speed_options.py --env HalfCheetah-v5

Both on one update of this TRPO with its zoo settings (one torch thread), after ten updates of learning:

* CG in float32 (what TRPO does), in float64 with float32 Fisher products, and with the whole policy in float64:
  time, iterations, relative residual, the cosine of each solution to the float64 one and the step size beta.
* The critic's minibatch step (features -> value, its gradient by hand as TRPO computes it): eager against
  ``torch.compile``, over one update's minibatches, with the compilation time.
"""

import argparse
import copy
import time
from typing import Any

import stable_baselines3.common.policies as sb3_policies
import torch as th

from sb3_trpo_ext.benchmark.run import make_env
from sb3_trpo_ext.benchmark.settings import settings_for
from sb3_trpo_ext.conjugate_gradient import conjugate_gradient
from sb3_trpo_ext.critic import resident_minibatches
from sb3_trpo_ext.fisher import fisher_vector_product, flat_grad
from sb3_trpo_ext.mlp import actor_network, critic_features
from sb3_trpo_ext.policies import PolicyInputs
from sb3_trpo_ext.surrogate import normalize_advantages, surrogate_objective


def trained_model(env_id: str):
    settings = settings_for("trpo_ext", env_id, same_settings=True)
    model = settings.model(make_env(settings, env_id, 0), 0)
    model.learn(10 * settings.n_envs * model.n_steps)
    _, callback = model._setup_learn(0, callback=None, reset_num_timesteps=False)
    env = model.get_env()
    assert env is not None
    model.collect_rollouts(env, callback, model.rollout_buffer, model.n_steps)
    return model


def policy_gradient(model, policy, params, dtype):
    batch = next(model.rollout_buffer.get(batch_size=None))
    observations, actions = batch.observations.to(dtype), batch.actions.to(dtype)
    advantages = normalize_advantages(batch.advantages).to(dtype)
    with th.no_grad():
        old_log_prob = copy.copy(policy.get_distribution(observations)).log_prob(actions)
    surrogate = surrogate_objective(policy.get_distribution(observations), actions, old_log_prob, advantages, 0.0)
    return observations, flat_grad(surrogate, params)


def cg_precision(model) -> None:
    policy, params = model.policy, model._actor_params
    observations, g = policy_gradient(model, policy, params, th.float32)
    fvp = fisher_vector_product(
        policy, PolicyInputs(observations), params, "analytic", model.cg_damping, actor_network(policy, params)
    )
    policy.action_dist.distribution = None  # holds graph tensors, which cannot be deep-copied
    policy64 = copy.deepcopy(policy).double()
    names = {id(param): name for name, param in policy.named_parameters()}
    params64 = [dict(policy64.named_parameters())[names[id(param)]] for param in params]
    # SB3 casts observations to float32 before the features extractor; keep float64 ones as they are.
    preprocess = sb3_policies.preprocess_obs

    def keep_float64(obs: Any, observation_space: Any, normalize_images: bool = True) -> Any:
        if isinstance(obs, th.Tensor) and obs.dtype == th.float64:
            return obs
        return preprocess(obs, observation_space, normalize_images)

    sb3_policies.preprocess_obs = keep_float64
    observations64, g64 = policy_gradient(model, policy64, params64, th.float64)
    network64 = actor_network(policy64, params64)
    fvp64 = fisher_vector_product(policy64, PolicyInputs(observations64), params64, "analytic", model.cg_damping, network64)
    variants = {
        "float32 (taken)": lambda: conjugate_gradient(fvp, g, model.cg_max_steps, model.cg_residual_tol),
        "float64 CG, float32 products": lambda: conjugate_gradient(
            lambda v: fvp(v.float()).double(), g.double(), model.cg_max_steps, model.cg_residual_tol
        ),
        "float64 policy and CG": lambda: conjugate_gradient(fvp64, g64, model.cg_max_steps, model.cg_residual_tol),
    }
    results = {}
    for name, solve in variants.items():
        start = time.perf_counter()
        results[name] = solve(), 1000 * (time.perf_counter() - start)
    reference = results["float64 policy and CG"][0].solution
    print("conjugate gradient | ms | iterations | residual | cosine to float64 | beta")
    for name, (result, ms) in results.items():
        x = result.solution.double()
        cosine = float(x @ reference / (x.norm() * reference.norm()))
        beta = (2 * model.target_kl / result.curvature) ** 0.5
        print(f"{name} | {ms:.1f} | {result.iterations} | {result.residual:.2e} | {cosine:.8f} | {beta:.6f}")
    sb3_policies.preprocess_obs = preprocess


def critic_compile(model) -> None:
    network = model._speedups.critic

    def to_features(observations: Any) -> th.Tensor:
        return critic_features(model.policy, observations)

    minibatches = list(resident_minibatches(model.rollout_buffer, model.n_critic_updates, model.batch_size, to_features))

    def gradient(features, returns):
        outputs = network.forward(features)
        residual = outputs[-1].flatten() - returns
        return network.vector_jacobian_product(outputs, (2.0 / len(returns)) * residual.unsqueeze(1))

    start = time.perf_counter()
    compiled = th.compile(gradient, dynamic=False)
    for features, returns in minibatches[:20]:  # every minibatch shape
        compiled(features, returns)
    compile_s = time.perf_counter() - start
    print("critic gradient, 320 minibatches | ms (best of 5)")
    for name, step in (("eager (taken)", gradient), ("torch.compile", compiled)):
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for features, returns in minibatches:
                step(features, returns)
            best = min(best, time.perf_counter() - start)
        print(f"{name} | {1000 * best:.1f}")
    print(f"compilation: {compile_s:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v5")
    args = parser.parse_args()
    th.set_num_threads(1)
    model = trained_model(args.env)
    next(model.rollout_buffer.get(batch_size=None))
    cg_precision(model)
    critic_compile(model)


if __name__ == "__main__":
    main()
