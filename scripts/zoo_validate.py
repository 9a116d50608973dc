"""Validate a packaged zoo entry: train it with the zoo command for several seeds, report the final evaluation.

    python scripts/zoo_validate.py --env Acrobot-v1 --seeds 0 1 2 -f logs/validate
    python scripts/zoo_validate.py --env Hopper-v5 -n 300000 --eval-freq 100000

Each seed runs ``python -m sb3_trpo_ext.zoo train --env ENV --seed S --eval-freq F --eval-episodes 10
--num-threads 1`` (one torch thread: with small networks more threads only contend for the cores)
with the entry's own n_timesteps (or ``-n``); the reported return is the mean deterministic return of the last
evaluation (10 episodes), one JSON line per seed. Choose F so that it divides the number of steps: the last
evaluation then happens at the end of training.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from sb3_trpo_ext.zoo import ALGO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("-f", "--log-folder", default="logs/validate")
    parser.add_argument("-n", "--n-timesteps", type=int, default=None, help="instead of the entry's n_timesteps")
    parser.add_argument("--eval-freq", type=int, default=10000, help="steps between evaluations")
    parser.add_argument("--summarize-only", action="store_true", help="read the runs already in the log folder")
    args = parser.parse_args()
    runs = sorted(Path(args.log_folder, ALGO).glob(f"{args.env}_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not args.summarize_only:
        budget = [] if args.n_timesteps is None else ["-n", str(args.n_timesteps)]
        for seed in args.seeds:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sb3_trpo_ext.zoo",
                    "train",
                    "--env",
                    args.env,
                    "--seed",
                    str(seed),
                    "--eval-freq",
                    str(args.eval_freq),
                    "--eval-episodes",
                    "10",
                    "--num-threads",
                    "1",
                    "-f",
                    args.log_folder,
                    *budget,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        runs = sorted(Path(args.log_folder, ALGO).glob(f"{args.env}_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
        runs = runs[-len(args.seeds) :]
    for seed, run in zip(args.seeds, runs, strict=False):
        evaluations = np.load(run / "evaluations.npz")
        print(
            json.dumps(
                dict(
                    env=args.env,
                    seed=seed,
                    run=run.name,
                    steps=int(evaluations["timesteps"][-1]),
                    mean_return=float(evaluations["results"][-1].mean()),
                )
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
