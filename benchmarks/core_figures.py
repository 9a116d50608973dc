"""Figures for the core algorithm: returns at 100k steps, beside sb3-contrib (speed: benchmarks/profile_update.py).

    python benchmarks/core_figures.py returns --env CartPole-v1 --seeds 0 1 2

Both algorithms get the same settings: the packaged zoo entry for the task (rl-zoo's sb3-contrib TRPO settings for
these two). Both tasks have one action dimension, where the two KLs coincide, so target_kl means the same for both.
"""

import argparse
import json
import time

import gymnasium as gym
import sb3_contrib
from stable_baselines3.common.evaluation import evaluate_policy

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
    return dict(
        algorithm=algorithm, env=env_id, seed=seed, steps=timesteps, mean_return=mean, std_return=std, wall_s=round(wall, 1)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    returns = sub.add_parser("returns")
    returns.add_argument("--env", choices=ENVS, required=True)
    returns.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    returns.add_argument("--timesteps", type=int, default=100_000)
    returns.add_argument("--algorithms", nargs="+", choices=list(ALGORITHMS), default=list(ALGORITHMS))
    args = parser.parse_args()
    for seed in args.seeds:
        for algorithm in args.algorithms:
            print(json.dumps(final_return(algorithm, args.env, seed, args.timesteps)), flush=True)


if __name__ == "__main__":
    main()
