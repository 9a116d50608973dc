"""
Hyperparameter studies of this TRPO: ``sb3-trpo-ext optimize`` workers sharing one Optuna journal per task.

Usage::

    python scripts/tune.py --env Ant-v5                 # two workers, resumes the study if it exists
    python scripts/tune.py --env Ant-v5 --fail-running  # after an interruption (see below)
    python scripts/tune.py --report Ant-v5 Hopper-v5    # finished trials and the best entry

Each worker is a separate ``sb3-trpo-ext optimize`` process with its own sampler seed (``--seed``, which also seeds
its environments) on the same journal file ``benchmarks/results/development/tuning/ENV.log``: the way several
machines share one study, with a file every worker can reach. Workers stop when the study holds ``--trials``
finished or running trials. Tuning seeds start at 1000, away from the reporting seeds 0-4. Each launch's workers take
seeds above every seed an earlier launch recorded (:func:`worker_seeds`): a sampler seeded as before would propose its
first random trials again. Two launches started at the same moment on machines sharing the journal read the same
record: give them ``--seed`` values apart.

``--enqueue-entry`` makes the packaged entry the study's next trial (once), so the search is measured against the
settings it would replace, on the same tuning seeds and budget.

A worker that is killed leaves its trial RUNNING for ever, and rl_zoo3 counts running trials towards the total.
``--fail-running`` marks such trials FAIL before the workers start; pass it only when no worker of the study is alive
anywhere. Every launch appends the commit and package versions to the study's user attributes (``launches``), so
each trial's start time says which code produced it.
"""

import argparse
import inspect
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sb3_trpo_ext.benchmark.provenance import provenance
from sb3_trpo_ext.zoo import ALGO

DEFAULT_OUTPUT = Path("benchmarks/results/development/tuning")


def _storage(path: Path) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


def _study(path: Path, env_id: str) -> Any:
    import optuna

    return optuna.create_study(storage=_storage(path), study_name=env_id, direction="maximize", load_if_exists=True)


def entry_as_trial(entry: dict[str, Any]) -> dict[str, Any]:
    """
    A zoo entry of this TRPO as raw parameters of its search space (``sample_trpo_ext_params``), the inverse of
    ``convert_trpo_ext_params``; keys the entry leaves out take the constructor's defaults.

    :raises ValueError: naming what the search space cannot express (``n_steps`` or the minibatch count not a power
        of 2, a network other than 64-64 or 256-256, an activation other than tanh or ReLU)
    """
    from torch import nn

    from sb3_trpo_ext.benchmark.settings import run_settings
    from sb3_trpo_ext.trpo import TRPO

    defaults = {name: p.default for name, p in inspect.signature(TRPO.__init__).parameters.items()}
    hyperparameters = defaults | run_settings("entry", entry, ALGO).hyperparameters
    policy_kwargs: dict[str, Any] = {"net_arch": None, "activation_fn": nn.Tanh, "log_std_init": 0.0, "ortho_init": True}
    policy_kwargs |= hyperparameters.get("policy_kwargs") or {}
    n_steps, batch_size = hyperparameters["n_steps"], hyperparameters["batch_size"]
    n_steps_pow, batch_pow = math.log2(n_steps), math.log2(batch_size)
    if not (n_steps_pow.is_integer() and batch_pow.is_integer() and batch_size <= n_steps):
        raise ValueError(f"n_steps {n_steps} and batch_size {batch_size} must be powers of 2, batch_size <= n_steps")
    nets = {None: "small", str([64, 64]): "small", str(dict(pi=[64, 64], vf=[64, 64])): "small",
            str(dict(pi=[256, 256], vf=[256, 256])): "medium"}  # fmt: skip
    activations = {nn.Tanh: "tanh", nn.ReLU: "relu"}
    net_arch = policy_kwargs["net_arch"]
    net_key = None if net_arch is None else str(net_arch)
    if net_key not in nets:
        raise ValueError(f"net_arch {net_arch!r} is not in the search space (64-64 or 256-256 for both networks)")
    if policy_kwargs["activation_fn"] not in activations:
        raise ValueError(f"activation_fn {policy_kwargs['activation_fn']!r} is not in the search space (tanh, ReLU)")
    return {
        "n_steps_pow": int(n_steps_pow),
        "minibatches_pow": int(n_steps_pow - batch_pow),
        # rounded so that 1 - 0.9999 is the search space's bound 1e-4, not 9.9999999999989e-05 below it
        "one_minus_gamma": float(f"{1 - hyperparameters['gamma']:.12g}"),
        "one_minus_gae_lambda": float(f"{1 - hyperparameters['gae_lambda']:.12g}"),
        **{key: hyperparameters[key] for key in ("learning_rate", "n_critic_updates", "cg_max_steps", "cg_damping",
                                                 "target_kl", "line_search_shrinking_factor",
                                                 "line_search_accept_ratio", "sub_sampling_factor")},
        "net_arch": nets[net_key],
        "activation_fn": activations[policy_kwargs["activation_fn"]],
        "log_std_init": float(policy_kwargs["log_std_init"]),
        "ortho_init": bool(policy_kwargs["ortho_init"]),
    }  # fmt: skip


def enqueue_entry(study: Any, env_id: str) -> dict[str, Any]:
    """Make this TRPO's packaged entry for ``env_id`` the study's next trial, unless a trial already has it."""
    from sb3_trpo_ext.benchmark.settings import zoo_entry

    params = entry_as_trial(zoo_entry(ALGO, env_id)[1])
    study.enqueue_trial(params, user_attrs={"packaged_entry": True}, skip_if_exists=True)
    return params


def fail_running_trials(study: Any) -> list[int]:
    """Mark the study's RUNNING trials FAIL (their workers are gone); returns their numbers."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=[TrialState.RUNNING])
    for trial in running:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return [trial.number for trial in running]


def record_launch(study: Any, command: list[str], seeds: list[int] | None = None) -> None:
    """Append this launch's time, commit, versions, first worker command and workers' seeds to the study's
    ``launches`` attribute."""
    launches = list(study.user_attrs.get("launches", []))
    record = dict(started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **provenance(ALGO), command=" ".join(command))
    launches.append({**record, **({"seeds": seeds} if seeds is not None else {})})
    study.set_user_attr("launches", launches)


def worker_seeds(study: Any, first_seed: int, workers: int) -> list[int]:
    """
    The seeds of this launch's workers: consecutive, from ``first_seed`` or above the largest seed an earlier launch
    recorded. A launch recorded before its seeds were is taken to have used its first worker's seed and the next.
    """
    used = [first_seed - 1]
    for launch in study.user_attrs.get("launches", []):
        if "seeds" in launch:
            used += launch["seeds"]
        elif match := re.search(r"--seed (\d+)", launch.get("command", "")):
            used.append(int(match.group(1)) + 1)
    return list(range(max(used) + 1, max(used) + 1 + workers))


def worker_command(args: argparse.Namespace, seed: int) -> list[str]:
    """One ``sb3-trpo-ext optimize`` worker of the study."""
    return [
        sys.executable, "-m", "sb3_trpo_ext.zoo", "optimize",
        "--env", args.env,
        "-n", str(args.n_timesteps),
        "--max-total-trials", str(args.trials),
        "--sampler", "tpe", "--pruner", "median", "--n-startup-trials", str(args.startup_trials),
        "--n-evaluations", str(args.n_evaluations), "--eval-episodes", str(args.eval_episodes),
        "--storage", str(args.output / f"{args.study}.log"), "--study-name", args.study,
        "--seed", str(seed), "--num-threads", "1", "--no-optim-plots",
        "-f", str(args.log_folder),
        *(["--env-kwargs", *args.env_kwargs] if args.env_kwargs else []),
    ]  # fmt: skip


def summary(path: Path, env_id: str) -> dict[str, Any]:
    """Counts of finished trials and the best trial's value, parameters and rl-zoo hyperparameters."""
    import optuna
    from optuna.trial import TrialState

    from sb3_trpo_ext.zoo import convert_trpo_ext_params

    # load_study, not _study: reading a journal must not append to it (create_study logs a creation each time).
    study = optuna.load_study(study_name=env_id, storage=_storage(path))
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(trial.state == state for trial in trials) for state in TrialState}
    result: dict[str, Any] = dict(env_id=env_id, trials=len(trials), **counts)
    if counts["complete"]:
        best = study.best_trial
        result.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                      best_user_attrs=best.user_attrs,
                      best_hyperparameters=convert_trpo_ext_params(best.params))  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", help="task to tune")
    parser.add_argument("--report", nargs="+", metavar="STUDY", help="print the studies' summaries and exit")
    parser.add_argument("--study", help="the study's name and journal (STUDY.log); default: the task's id")
    parser.add_argument("--env-kwargs", nargs="+", metavar="NAME:VALUE", help="the task's keyword arguments (rl_zoo3's form)")
    parser.add_argument("-n", "--n-timesteps", type=int, default=300_000, help="steps per trial")
    parser.add_argument("--trials", type=int, default=30, help="finished or running trials the study stops at")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first launch's first worker; the others count up")
    parser.add_argument("--startup-trials", type=int, default=10, help="random trials before TPE, and the pruner's")
    parser.add_argument("--n-evaluations", type=int, default=3, help="evaluations per trial (the pruner's reports)")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--enqueue-entry", action="store_true", help="the packaged entry as the next trial (once)")
    parser.add_argument("--fail-running", action="store_true", help="mark RUNNING trials FAIL first (no live worker)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="folder of the journals")
    parser.add_argument("--log-folder", type=Path, default=Path("logs/tuning"), help="rl_zoo3's log folder")
    args = parser.parse_args(argv)
    if args.report:
        for env_id in args.report:
            print(json.dumps(summary(args.output / f"{env_id}.log", env_id), default=str))
        return
    if args.env is None:
        parser.error("--env or --report is needed")
    args.study = args.study or args.env
    args.output.mkdir(parents=True, exist_ok=True)
    study = _study(args.output / f"{args.study}.log", args.study)
    if args.fail_running:
        failed = fail_running_trials(study)
        if failed:
            print(f"marked RUNNING trials {failed} FAIL", flush=True)
    if args.enqueue_entry:
        print(f"enqueued the packaged entry: {enqueue_entry(study, args.env)}", flush=True)
    seeds = worker_seeds(study, args.seed, args.workers)
    commands = [worker_command(args, seed) for seed in seeds]
    record_launch(study, commands[0], seeds)
    workers = [subprocess.Popen(command) for command in commands]
    codes = [worker.wait() for worker in workers]
    if any(codes):
        raise SystemExit(f"workers exited with {codes}")


if __name__ == "__main__":
    main()
