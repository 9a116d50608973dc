"""Where an update's time goes: train() and collect_rollouts() of this TRPO and sb3-contrib's, side by side.

    python -m sb3_trpo_ext.benchmark.profile_update --env HalfCheetah-v5 --updates 10 --top 20

Both get the same settings (the benchmark's --same-settings: this TRPO's zoo entry, the same true trust region) and
one torch thread. Their train() and collect_rollouts() calls are interleaved, so that the machine's drift hits both
alike; the medians and their ratio are printed, then cProfile's heaviest functions inside each algorithm's train()
and collect_rollouts().
"""

import argparse
import cProfile
import io
import pstats
import statistics
import time

import torch as th

from sb3_trpo_ext.benchmark.run import make_env
from sb3_trpo_ext.benchmark.settings import ALGORITHMS, settings_for


def build(algo: str, env_id: str, seed: int):
    settings = settings_for(algo, env_id, same_settings=True)
    model = settings.model(make_env(settings, env_id, seed), seed)
    model.learn(settings.n_envs * model.n_steps)  # one rollout and one update: buffers and logger in place
    return model


def rollout(model) -> None:
    model.collect_rollouts(model.env, model._callback_for_profile, model.rollout_buffer, model.n_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    th.set_num_threads(1)
    models = {algo: build(algo, args.env, 0) for algo in ("trpo_ext", "trpo")}
    for model in models.values():
        _, model._callback_for_profile = model._setup_learn(0, callback=None, reset_num_timesteps=False)
        model._callback_for_profile.on_training_start(locals(), globals())
    times: dict[tuple[str, str], list[float]] = {(algo, phase): [] for algo in models for phase in ("train", "rollout")}
    for _ in range(args.updates):
        for algo, model in models.items():
            for phase, call in (("rollout", lambda model=model: rollout(model)), ("train", model.train)):
                start = time.perf_counter()
                call()
                times[algo, phase].append(time.perf_counter() - start)
    steps = models["trpo_ext"].n_steps * models["trpo_ext"].n_envs
    print(f"{args.env}, {steps} steps per rollout, medians over {args.updates} interleaved updates (ms):")
    for phase in ("train", "rollout"):
        ours, theirs = (1000 * statistics.median(times[algo, phase]) for algo in models)
        print(
            f"  {phase:8s} {ALGORITHMS['trpo_ext']}: {ours:8.1f}   {ALGORITHMS['trpo']}: {theirs:8.1f}   "
            f"ratio {ours / theirs:.2f}"
        )
    for algo, model in models.items():
        for phase, call in (("train", model.train), ("rollout", lambda model=model: rollout(model))):
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(3):
                call()
            profile.disable()
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(args.top)
            print(f"\n===== {ALGORITHMS[algo]}: {phase}, 3 calls =====")
            print(out.getvalue().split("\n", 6)[-1])


if __name__ == "__main__":
    main()
