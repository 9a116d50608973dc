"""
Benchmark sb3-trpo-ext's TRPO against sb3-contrib's TRPO and SB3's PPO, on one machine and one budget.

    python -m sb3_trpo_ext.benchmark --envs CartPole-v1 Pendulum-v1 --seeds 0 1 2 --jobs 2 --output results
    python -m sb3_trpo_ext.benchmark --envs HalfCheetah-v5 -n 300000 --same-settings --output results-same
    python -m sb3_trpo_ext.benchmark --quick --envs CartPole-v1
    python -m sb3_trpo_ext.benchmark --envs Hopper-v5 --seeds 0 1 2 3 4 --ray ray://head:10001 --output results

Each algorithm runs with its own rl-zoo hyperparameters (this package's file for sb3-trpo-ext, rl_zoo3's for the
others); every algorithm on an environment gets the same number of steps (``-n``, else this TRPO's zoo entry's).
``--same-settings`` gives both TRPOs this TRPO's entry and the same true trust region. Runs are interleaved
(seed by seed, environment by environment, algorithm by algorithm) so that the machine's drift hits all alike,
each in its own process with one torch thread, up to ``--jobs`` at a time. With ``--ray [ADDRESS]`` each run is a
Ray task instead (one CPU each, a fresh worker process per run) on the cluster at ADDRESS (without one: the cluster
``RAY_ADDRESS`` names, else a local one); the run files are written here, by this process, exactly as local runs'.

Finished runs are kept in OUTPUT/runs/ and reused when the same command is run again, as long as they were made
with the same settings, package versions and algorithm code (each run file records them and its commit); others are
run again. The report (runs.csv, runs.json, curves.csv, summary.md, learning_curves.png, speed_ratios.png) is rewritten from
all of them.
"""

import argparse
import json
import multiprocessing
import shlex
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sb3_trpo_ext.benchmark.provenance import provenance, reproduces
from sb3_trpo_ext.benchmark.report import write_report
from sb3_trpo_ext.benchmark.run import RUN_THREADS, RunSpec, execute, write_run
from sb3_trpo_ext.benchmark.settings import ALGORITHMS, DEFAULT_ALGORITHMS, settings_for, settings_record
from sb3_trpo_ext.extras import exits_on_missing_extra, require, require_env
from sb3_trpo_ext.zoo import ALGO

DEFAULT_ENVS = [
    "CartPole-v1",
    "Pendulum-v1",
    "Acrobot-v1",
    "LunarLanderContinuous-v3",
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
    "Swimmer-v5",
]

QUICK_TIMESTEPS = 10_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sb3_trpo_ext.benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--envs", nargs="+", default=DEFAULT_ENVS, help="gymnasium ids (default: %(default)s)")
    parser.add_argument("--algos", nargs="+", default=list(DEFAULT_ALGORITHMS), choices=list(ALGORITHMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (0 with --quick)")
    parser.add_argument(
        "-n",
        "--n-timesteps",
        type=int,
        default=None,
        help="steps per run (default: the sb3-trpo-ext zoo entry's n_timesteps; 10000 with --quick)",
    )
    parser.add_argument(
        "--same-settings", action="store_true", help="both TRPOs get this TRPO's zoo entry and the same true trust region"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, one process each (not with --ray)")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run each run as a task on a Ray cluster (ADDRESS, else RAY_ADDRESS's or a local one); needs the ray extra",
    )
    parser.add_argument("--eval-freq", type=int, default=None, help="steps between evaluations (default: budget / 10)")
    parser.add_argument(
        "--eval-episodes", type=int, default=None, help="deterministic episodes per evaluation (default: 10; 3 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TIMESTEPS} steps, seed 0, short evaluations")
    parser.add_argument("--output", default="benchmark_results", help="directory for the results")
    args = parser.parse_args(argv)
    if args.ray is not None and args.jobs != 1:
        parser.error("--jobs is for local runs; with --ray the cluster's CPUs decide how many run at a time")
    for name in ("jobs", "n_timesteps", "eval_freq", "eval_episodes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return args


def run_specs(args: argparse.Namespace) -> list[RunSpec]:
    """Every run, interleaved: for each seed, each environment, each algorithm."""
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    specs = []
    for seed in seeds:
        for env_id in args.envs:
            budget = args.n_timesteps or (QUICK_TIMESTEPS if args.quick else settings_for(ALGO, env_id).n_timesteps)
            for algo in args.algos:
                specs.append(
                    RunSpec(
                        env_id=env_id,
                        algo=algo,
                        seed=seed,
                        n_timesteps=budget,
                        eval_freq=args.eval_freq or max(budget // (4 if args.quick else 10), 1),
                        n_eval_episodes=args.eval_episodes or (3 if args.quick else 10),
                        env_rate_steps=2_000 if args.quick else 20_000,
                        same_settings=args.same_settings,
                    )
                )
    return specs


def stale(spec: RunSpec, output_dir: Path) -> str | None:
    """
    Why the output directory's run of ``spec`` cannot be reused (None when it can): it is missing, or it was made
    with other settings, other package versions or other algorithm code than this command would use.
    """
    path = output_dir / "runs" / f"{spec.name}.json"
    if not path.exists():
        return "not run yet"
    record = json.loads(path.read_text())
    differing = [key for key, value in asdict(spec).items() if record.get(key) != value]
    settings = settings_record(settings_for(spec.algo, spec.env_id, spec.same_settings))
    differing += [key for key, value in settings.items() if record.get(key) != value]
    if differing:
        return f"its {', '.join(differing)} differ from this command's"
    # At equal settings a baseline runs this TRPO's entries, which the baseline's own harness digest does not cover.
    current = provenance(spec.algo, threads=RUN_THREADS)
    return reproduces(record.get("provenance", {}), current, spec.algo, by_digest=not spec.same_settings)


RunOutcome = tuple[RunSpec, dict[str, Any] | Exception]


def local_runs(todo: list[RunSpec], output_dir: Path, jobs: int) -> Iterator[RunOutcome]:
    """Each run in a fresh local process (maxtasksperchild=1: its peak memory is its own, no state leaks), in order."""
    with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=1) as pool:
        pending = [(spec, pool.apply_async(execute, (spec, str(output_dir)))) for spec in todo]
        for spec, result in pending:
            try:
                yield spec, result.get()
            except Exception as error:
                yield spec, error


def ray_runs(todo: list[RunSpec], output_dir: Path, address: str | None) -> Iterator[RunOutcome]:
    """Each run as a Ray task (one CPU, a fresh worker process), anywhere on the cluster; written here as they finish."""
    require("ray", "--ray")
    import ray

    if not ray.is_initialized():
        ray.init(address=address)
    remote_execute = ray.remote(num_cpus=1, max_calls=1)(execute)
    pending = {remote_execute.remote(spec): spec for spec in todo}
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        spec = pending.pop(ref)
        try:
            run = ray.get(ref)
        except Exception as error:
            yield spec, error
            continue
        write_run(run, output_dir)
        yield spec, run


@exits_on_missing_extra
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for env_id in args.envs:  # before any run starts, not as failures minutes into the benchmark
        require_env(env_id)
    output_dir = Path(args.output)
    output_dir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "sb3_trpo_ext.benchmark", *(sys.argv[1:] if argv is None else argv)])
    specs = run_specs(args)
    for spec in specs:  # fail on a bad environment or zoo entry before anything runs
        settings_for(spec.algo, spec.env_id, spec.same_settings)
    todo = []
    for spec in specs:
        reason = stale(spec, output_dir)
        if reason is not None:
            todo.append(spec)
            if reason != "not run yet":
                print(f"rerunning {spec.name}: {reason}", flush=True)
    print(f"{len(specs)} runs, {len(specs) - len(todo)} already in {output_dir}, {args.jobs} at a time", flush=True)

    failures = []
    runs = ray_runs(todo, output_dir, args.ray or None) if args.ray is not None else local_runs(todo, output_dir, args.jobs)
    for done, (spec, run) in enumerate(runs, start=1):
        if isinstance(run, Exception):
            failures.append((spec, run))
            print(f"[{done}/{len(todo)}] {spec.name} FAILED: {run!r}", flush=True)
            continue
        print(
            f"[{done}/{len(todo)}] {spec.env_id} {ALGORITHMS[spec.algo]} seed {spec.seed}: return "
            f"{run['final_return']:.1f}, {run['steps_per_second']:.0f} steps/s, train() "
            f"{run['train_ms_per_update']:.1f} ms/update, {run['wall_seconds']:.0f} s",
            flush=True,
        )
    (output_dir / "command.txt").write_text(command + "\n")
    write_report(output_dir, command)
    print(f"report written to {output_dir}/summary.md", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
