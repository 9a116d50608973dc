"""Figures for the core algorithm: returns at 100k steps and train() time per update, beside sb3-contrib.

    python benchmarks/core_figures.py returns --env CartPole-v1 --seeds 0 1 2
    python benchmarks/core_figures.py timing --updates 8

Both algorithms get the same settings: the packaged zoo entry for the task (rl-zoo's sb3-contrib TRPO settings for
these two). Both tasks have one action dimension, where the two KLs coincide, so target_kl means the same for both.
"""

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import sb3_contrib
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

import sb3_trpo_ext
from sb3_trpo_ext.benchmark.run import make_env
from sb3_trpo_ext.benchmark.settings import settings_for
from sb3_trpo_ext.zoo import ALGO

ENVS = ("CartPole-v1", "Pendulum-v1")
ALGORITHMS = {"sb3_trpo_ext": sb3_trpo_ext.TRPO, "sb3_contrib": sb3_contrib.TRPO}


def final_return(algorithm: str, env_id: str, seed: int, timesteps: int) -> dict:
    settings = settings_for(ALGO, env_id)  # the packaged zoo entry, read as the benchmark and rl_zoo3 read it
    env = make_env(settings, env_id, seed)
    model = ALGORITHMS[algorithm](settings.policy, env, seed=seed, device="cpu", **settings.hyperparameters)
    start = time.perf_counter()
    model.learn(timesteps)
    wall = time.perf_counter() - start
    eval_env = gym.make(env_id)
    eval_env.reset(seed=10_000 + seed)
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
    return dict(algorithm=algorithm, env=env_id, seed=seed, steps=timesteps, mean_return=mean, std_return=std,
                wall_s=round(wall, 1))


def train_milliseconds(updates: int) -> dict:
    """train() milliseconds per update on HalfCheetah-v5, both algorithms interleaved in one process."""
    settings = dict(n_steps=1024, batch_size=128, cg_max_steps=25, n_critic_updates=20, cg_damping=0.1,
                    target_kl=0.04, gae_lambda=0.95, gamma=0.99, learning_rate=1e-3, device="cpu", seed=0)
    models, timings = {}, {name: [] for name in ALGORITHMS}
    for name, cls in ALGORITHMS.items():
        env = VecNormalize(make_vec_env("HalfCheetah-v5", n_envs=2, seed=0))
        models[name] = cls("MlpPolicy", env, **settings)

        def timed(model=models[name], record=timings[name], original=models[name].train):
            start = time.perf_counter()
            original()
            record.append(1000 * (time.perf_counter() - start))

        models[name].train = timed
    for _ in range(updates + 1):  # the first update of each warms up and is dropped
        for model in models.values():
            model.learn(2048, reset_num_timesteps=False)
    result = {name: float(np.median(times[1:])) for name, times in timings.items()}
    result["ratio_ext_over_contrib"] = result["sb3_trpo_ext"] / result["sb3_contrib"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    returns = sub.add_parser("returns")
    returns.add_argument("--env", choices=ENVS, required=True)
    returns.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    returns.add_argument("--timesteps", type=int, default=100_000)
    returns.add_argument("--algorithms", nargs="+", choices=list(ALGORITHMS), default=list(ALGORITHMS))
    timing = sub.add_parser("timing")
    timing.add_argument("--updates", type=int, default=8)
    args = parser.parse_args()
    if args.command == "returns":
        for seed in args.seeds:
            for algorithm in args.algorithms:
                print(json.dumps(final_return(algorithm, args.env, seed, args.timesteps)), flush=True)
    else:
        print(json.dumps(train_milliseconds(args.updates)), flush=True)


if __name__ == "__main__":
    main()
