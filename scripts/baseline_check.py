"""
Is a baseline of the benchmark the baseline rl_zoo3 trains? One seed of one algorithm (``ppo``, ``trpo``) on one task,
trained twice: by rl_zoo3's own ``train.py`` with the zoo entry the benchmark takes (its -v4 entry under the task's
-v5 name, nothing else changed), and by the benchmark's harness (``benchmark.run.train``). Then:

* the policies' parameters and the VecNormalize statistics, compared bit for bit;
* both final models evaluated the same way (the harness's evaluation: a separate environment seeded seed + 10000,
  deterministic actions, 10 episodes), their returns printed side by side;
* each tool's own evaluations along the way: rl_zoo3's EvalCallback (its evaluation environment is seeded like the
  training one) and the harness's learning curve.

    python scripts/baseline_check.py --algo ppo --env Hopper-v5 -n 100000 --seed 0 --eval-freq 10000

One JSON line is printed, and written with ``--output FILE``.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml

from sb3_trpo_ext.benchmark.provenance import provenance
from sb3_trpo_ext.benchmark.run import RunSpec, make_env, train
from sb3_trpo_ext.benchmark.settings import algorithm_class, zoo_entry
from sb3_trpo_ext.extras import exits_on_missing_extra, require
from sb3_trpo_ext.safe_loading import custom_objects_without_pickle, load_vec_normalize


def zoo_train(algo: str, env_id: str, n_timesteps: int, seed: int, eval_freq: int, folder: Path) -> Path:
    """rl_zoo3's train.py on ``env_id`` with the entry the benchmark takes for it; the run's folder."""
    _, entry = zoo_entry(algo, env_id)
    # The entry as rl_zoo3's file has it (its YAML anchors resolved), under the task's own name.
    conf = folder / f"{algo}.yml"
    conf.write_text(yaml.safe_dump({env_id: entry}))
    command = [sys.executable, "-m", "rl_zoo3.train", "--algo", algo, "--env", env_id, "--conf-file", str(conf),
               "-n", str(n_timesteps), "--seed", str(seed), "--eval-freq", str(eval_freq), "--eval-episodes", "10",
               "--n-eval-envs", "1", "--num-threads", "1", "-f", str(folder / "logs")]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=folder)
    return folder / "logs" / algo / f"{env_id}_1"


def evaluate(model: Any, settings: Any, env_id: str, seed: int, obs_rms: Any) -> float:
    """The harness's evaluation of a model whose observations are normalised with ``obs_rms`` (None: not)."""
    from stable_baselines3.common.evaluation import evaluate_policy

    eval_env = make_env(settings, env_id, seed + 10_000, for_evaluation=True)
    if obs_rms is not None:
        eval_env.obs_rms = obs_rms  # type: ignore[attr-defined]
    mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
    return float(mean_return)  # type: ignore[arg-type]


@exits_on_missing_extra
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/baseline_check.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--algo", required=True, choices=["ppo", "trpo"])
    parser.add_argument("--env", required=True)
    parser.add_argument("-n", "--n-timesteps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-freq", type=int, default=10_000)
    parser.add_argument("--output", help="also write the JSON line to this file")
    args = parser.parse_args(argv)
    require("bench", "python scripts/baseline_check.py")

    spec = RunSpec(args.env, args.algo, args.seed, args.n_timesteps, args.eval_freq, 10, 0)
    harness = train(spec)
    with tempfile.TemporaryDirectory() as folder:
        run = zoo_train(args.algo, args.env, args.n_timesteps, args.seed, args.eval_freq, Path(folder))
        cls, zip_path = algorithm_class(args.algo), run / f"{args.env}.zip"
        zoo_model = cls.load(zip_path, device="cpu", custom_objects=custom_objects_without_pickle(zip_path, cls))
        normalize = run / args.env / "vecnormalize.pkl"
        zoo_rms: Any = None
        if normalize.exists():
            # rl_zoo3's train.py writes its statistics as a pickle only; this command has just written it.
            venv = make_env(harness.settings, args.env, 0).venv  # type: ignore[attr-defined]
            zoo_rms = load_vec_normalize(normalize, venv, trust_pickle=True).obs_rms
        zoo_curve = np.load(run / "evaluations.npz")
        zoo_evaluations = [float(np.mean(results)) for results in zoo_curve["results"]]
        zoo_steps = [int(step) for step in zoo_curve["timesteps"]]

    ours, theirs = harness.model.policy.state_dict(), zoo_model.policy.state_dict()
    differing = [name for name in ours if not th.equal(ours[name], theirs[name])]
    harness_env = harness.model.get_env()
    harness_rms: Any = getattr(harness_env, "obs_rms", None)
    same_statistics = (harness_rms is None) == (zoo_rms is None) and (
        harness_rms is None
        or (np.array_equal(harness_rms.mean, zoo_rms.mean) and np.array_equal(harness_rms.var, zoo_rms.var))
    )
    record = dict(
        algo=args.algo,
        env=args.env,
        seed=args.seed,
        n_timesteps=args.n_timesteps,
        identical_parameters=not differing,
        differing_parameters=differing,
        identical_normalization=same_statistics,
        harness_final_return=evaluate(harness.model, harness.settings, args.env, args.seed, harness_rms),
        zoo_final_return=evaluate(zoo_model, harness.settings, args.env, args.seed, zoo_rms),
        harness_curve=dict(steps=[step for step, _ in harness.curve.points], returns=[r for _, r in harness.curve.points]),
        zoo_curve=dict(steps=zoo_steps, returns=zoo_evaluations),
        provenance=provenance(args.algo),
    )
    line = json.dumps(record)
    print(line)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(line + "\n")
    return 0 if record["identical_parameters"] and same_statistics else 1


if __name__ == "__main__":
    sys.exit(main())
