"""Where an update's time goes: train() and collect_rollouts() of two algorithms, side by side.

    python scripts/profile_update.py --env HalfCheetah-v5 --updates 10 --top 20
    python scripts/profile_update.py --env PendulumNoVel-v1 --algos recurrent_trpo_ext ppo_lstm

By default this TRPO and sb3-contrib's, with the same settings (the benchmark's --same-settings: this TRPO's zoo
entry, the same true trust region); any other pair runs with each one's own zoo entry. One torch thread. Their
train() and collect_rollouts() calls are interleaved, so that the machine's drift hits both alike; the medians per
update and per 1000 samples and their ratios are printed, then cProfile's heaviest functions inside each
algorithm's train() and collect_rollouts().
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
    parser.add_argument("--algos", nargs=2, default=["trpo_ext", "trpo"], choices=list(ALGORITHMS))
    args = parser.parse_args()
    th.set_num_threads(1)
    models = {algo: build(algo, args.env, 0) for algo in args.algos}
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
    print(f"{args.env}, medians over {args.updates} interleaved updates:")
    first, second = args.algos
    samples = {algo: model.n_steps * model.n_envs for algo, model in models.items()}
    for phase in ("train", "rollout"):
        per_update = {algo: 1000 * statistics.median(times[algo, phase]) for algo in models}
        per_1000 = {algo: 1000 * per_update[algo] / samples[algo] for algo in models}
        print(
            f"  {phase:8s} "
            + "   ".join(f"{ALGORITHMS[a]}: {per_update[a]:8.1f} ms ({per_1000[a]:6.1f} per 1000 samples)" for a in models)
            + f"   ratio {per_update[first] / per_update[second]:.2f} per update,"
            f" {per_1000[first] / per_1000[second]:.2f} per sample"
        )
    print("  samples per update: " + ", ".join(f"{ALGORITHMS[a]} {samples[a]}" for a in models))
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
