"""
Two checkouts of this package side by side: train() per update and steps per second of one algorithm on one task,
each in a fresh process importing the package from its checkout, the checkouts alternating, repeated.

    python scripts/checkout_speed.py --checkouts /path/old /path/new --env HalfCheetah-v5 --repeats 3

Each measurement builds the algorithm with its zoo entry (the benchmark's settings, one torch thread), learns one
update to warm up, then times ``--updates`` more: the median ``train()`` time per update and the steps per second of
the whole learning (rollouts and updates). Those trajectories part wherever the two checkouts round otherwise, and
with them the episodes' resets. So it also times ``--updates`` rollouts of the untrained policy, which both checkouts
build alike from the seed: the median µs per step, and a hash of the actions taken, equal where the two acted alike.
Medians and ranges over the repeats are printed per checkout, then the new / old ratios: of the medians, and within
each repeat (median [min, max]). Run it on a machine doing nothing else: this compares speeds.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

#: The measurement, run in a fresh interpreter with the checkout first on the path; it uses only what both checkouts
#: have (the benchmark's settings and environments).
WORKER = """
import hashlib, json, statistics, sys, time
import torch as th
th.set_num_threads(1)
import sb3_trpo_ext
from sb3_trpo_ext.benchmark.run import make_env
from sb3_trpo_ext.benchmark.settings import settings_for
algo, env_id, n_updates = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = settings_for(algo, env_id)
model = settings.model(make_env(settings, env_id, 0), 0)
per_update = settings.n_envs * model.n_steps
model.learn(per_update)
train, seconds = model.train, []
def timed():
    start = time.perf_counter()
    train()
    seconds.append(time.perf_counter() - start)
model.train = timed
start = time.perf_counter()
model.learn(n_updates * per_update, reset_num_timesteps=False)
wall = time.perf_counter() - start
fresh = settings.model(make_env(settings, env_id, 0), 0)
_, callback = fresh._setup_learn(n_updates * per_update)
rollouts, actions = [], hashlib.sha256()
for _ in range(n_updates):
    start = time.perf_counter()
    fresh.collect_rollouts(fresh.env, callback, fresh.rollout_buffer, fresh.n_steps)
    rollouts.append(time.perf_counter() - start)
    actions.update(fresh.rollout_buffer.actions.tobytes())
print(json.dumps(dict(package=sb3_trpo_ext.__file__, train_ms=1000 * statistics.median(seconds),
                      steps_per_second=n_updates * per_update / wall,
                      rollout_us=1e6 * statistics.median(rollouts) / per_update,
                      actions=actions.hexdigest()[:16])))
"""


def measure(checkout: str, algo: str, env_id: str, n_updates: int) -> dict[str, Any]:
    """One measurement in a fresh process that imports the package from ``checkout``."""
    # Run in the checkout: `python -c` puts the working directory first on the path.
    env = {**os.environ, "PYTHONPATH": checkout, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", WORKER, algo, env_id, str(n_updates)],
        capture_output=True,
        text=True,
        env=env,
        cwd=checkout,
        check=True,
    )
    record = json.loads(result.stdout.strip().splitlines()[-1])
    if not record["package"].startswith(os.path.abspath(checkout)):
        raise RuntimeError(f"{checkout}: the package was imported from {record['package']}")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/checkout_speed.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkouts", nargs=2, required=True, metavar=("OLD", "NEW"))
    parser.add_argument("--algo", default="trpo_ext")
    parser.add_argument("--env", required=True)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, Any]]] = {checkout: [] for checkout in args.checkouts}
    for repeat in range(args.repeats):
        order = args.checkouts if repeat % 2 == 0 else args.checkouts[::-1]
        for checkout in order:
            results[checkout].append(measure(checkout, args.algo, args.env, args.updates))
            print(json.dumps(dict(repeat=repeat, checkout=checkout, **results[checkout][-1])), flush=True)
    keys = ("train_ms", "steps_per_second", "rollout_us")
    medians = {}
    for checkout, records in results.items():
        for key in keys:
            values = [record[key] for record in records]
            medians[checkout, key] = statistics.median(values)
            print(f"{args.algo} {args.env} {checkout}: {key} median {medians[checkout, key]:.1f} "
                  f"[{min(values):.1f}, {max(values):.1f}]")  # fmt: skip
    old, new = args.checkouts
    for key in keys:
        paired = [b[key] / a[key] for a, b in zip(results[old], results[new], strict=True)]
        print(f"{args.algo} {args.env}: {key} new/old {medians[new, key] / medians[old, key]:.3f}, within each repeat "
              f"{statistics.median(paired):.3f} [{min(paired):.3f}, {max(paired):.3f}]")  # fmt: skip
    hashes = {checkout: {record["actions"] for record in records} for checkout, records in results.items()}
    print(f"{args.algo} {args.env}: the untrained rollouts' actions {'equal' if hashes[old] == hashes[new] else 'differ'}"
          f" ({', '.join(sorted(hashes[old] | hashes[new]))})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
