"""
What the algorithms compute, as digests: each of a fixed set of short runs (every algorithm, both settings of
``fast_paths``, the classic-control tasks and HalfCheetah) trains from a fixed seed, and the bytes of its policy's
state (every parameter and buffer) are hashed. A refactor that changes no number leaves every digest as it was.

    python scripts/behaviour.py                 # print the digests (JSON, one line per run)
    python scripts/behaviour.py --output FILE   # also write them
    python scripts/behaviour.py --compare FILE  # exit 1, naming the runs, if any digest differs

The benchmark's runs are matched on what the harness computes (:func:`harness_digest`: each algorithm through the
benchmark's own settings, environments, normalisation and evaluation, a few updates on each reported task), so that a
change of the code that changes no number keeps them. ``--harness --record`` adds the checkout's digests, under its
source fingerprints, to the table the benchmark reads (``provenance.HARNESS_DIGESTS``):

    python scripts/behaviour.py --harness --algos trpo_ext trpo ppo --record

``--current FOLDER ...`` asks the benchmark, for every run file of each results folder, whether it would reuse the
run now (:func:`sb3_trpo_ext.benchmark.cli.stale`), and exits 1 naming the runs it would make again.
"""

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch as th

from sb3_trpo_ext.benchmark.provenance import HARNESS_DIGESTS, provenance, read_harness_digests
from sb3_trpo_ext.extras import exits_on_missing_extra, require


@dataclass(frozen=True)
class BehaviourRun:
    """One short run: an algorithm of :data:`sb3_trpo_ext.zoo.ALGORITHMS`, a task, a budget and the constructor's
    keyword arguments."""

    name: str
    algo: str
    env_id: str
    n_timesteps: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    n_envs: int = 1


SMALL_RECURRENT = dict(policy_kwargs=dict(lstm_hidden_size=16, net_arch=dict(pi=[16], vf=[16])), batch_size=64)

RUNS = [
    *(
        BehaviourRun(f"trpo-{env_id}{'-public' if not fast else ''}", "trpo_ext", env_id, 8192, dict(fast_paths=fast))
        for env_id in ("CartPole-v1", "Pendulum-v1", "HalfCheetah-v5", "Acrobot-v1")
        for fast in (True, False)
    ),
    BehaviourRun(
        "trpo-CartPole-v1-sub2-autograd", "trpo_ext", "CartPole-v1", 4096, dict(sub_sampling_factor=2, fvp_method="autograd")
    ),
    BehaviourRun("npg-CartPole-v1", "npg_ext", "CartPole-v1", 4096, dict(n_steps=1024)),
    BehaviourRun("npg-Pendulum-v1", "npg_ext", "Pendulum-v1", 4096, dict(n_steps=1024)),
    BehaviourRun("maskable-InvalidAction", "maskable_trpo_ext", "InvalidActionEnvDiscrete", 4096, dict(n_steps=1024)),
    BehaviourRun(
        "recurrent-CartPoleNoVel-v1",
        "recurrent_trpo_ext",
        "CartPoleNoVel-v1",
        1024,
        dict(n_steps=64, **SMALL_RECURRENT),
        n_envs=4,
    ),
    BehaviourRun(
        "recurrent-CartPoleNoVel-v1-public",
        "recurrent_trpo_ext",
        "CartPoleNoVel-v1",
        1024,
        dict(n_steps=64, fast_paths=False, **SMALL_RECURRENT),
        n_envs=4,
    ),
]


def make_env(run: BehaviourRun, seed: int) -> Any:
    from stable_baselines3.common.env_util import make_vec_env

    if run.env_id == "InvalidActionEnvDiscrete":
        from sb3_contrib.common.envs import InvalidActionEnvDiscrete

        factory: str | Callable[[], Any] = lambda: InvalidActionEnvDiscrete(dim=20, n_invalid_actions=10)  # noqa: E731
    else:
        import rl_zoo3.import_envs  # noqa: F401  # registers CartPoleNoVel-v1

        factory = run.env_id
    return make_vec_env(factory, n_envs=run.n_envs, seed=seed)


def state_digest(hashed: Any, state: dict[str, th.Tensor]) -> None:
    """Add a state dict (names and bytes) to the hash ``hashed``."""
    for name, tensor in state.items():
        hashed.update(name.encode())
        hashed.update(tensor.detach().cpu().contiguous().numpy().tobytes())


def digest(run: BehaviourRun, seed: int = 0) -> str:
    """The sha256 of the policy's state after ``run``, from ``seed``, on one torch thread."""
    from sb3_trpo_ext.zoo import ALGORITHMS

    th.set_num_threads(1)
    algorithm = ALGORITHMS[run.algo]
    policy = "MlpLstmPolicy" if run.algo == "recurrent_trpo_ext" else "MlpPolicy"
    model = algorithm(policy, make_env(run, seed), seed=seed, **run.kwargs)
    model.learn(run.n_timesteps)
    hashed = hashlib.sha256()
    state_digest(hashed, model.policy.state_dict())
    return hashed.hexdigest()[:16]


#: The tasks of the reported comparison, which a harness digest runs.
HARNESS_TASKS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Swimmer-v5")


def harness_digest(algo: str, tasks: tuple[str, ...] = HARNESS_TASKS, updates: int = 2) -> str:
    """
    What the benchmark computes for ``algo``: on each task, the benchmark's own run (its settings, environments,
    normalisation, the algorithm and the evaluation) for ``updates`` updates of the entry from seed 0, one evaluation
    episode at the end; the hash of every policy's state, normalisation statistics and evaluation return.
    """
    from sb3_trpo_ext.benchmark.run import RunSpec, train
    from sb3_trpo_ext.benchmark.settings import settings_for

    hashed = hashlib.sha256()
    for env_id in tasks:
        settings = settings_for(algo, env_id)
        steps = updates * int(settings.hyperparameters.get("n_steps", 2048)) * settings.n_envs
        run = train(RunSpec(env_id, algo, 0, steps, steps, 1, 0))
        state_digest(hashed, run.model.policy.state_dict())
        statistics = getattr(run.model.get_env(), "obs_rms", None)
        if statistics is not None:
            hashed.update(statistics.mean.tobytes() + statistics.var.tobytes())
        hashed.update(repr(run.curve.points).encode())
    return hashed.hexdigest()[:16]


def record_harness_digests(algos: list[str], path: Path | None = None) -> list[dict[str, Any]]:
    """Compute the checkout's harness digests of ``algos`` and add them to the table at ``path``."""
    path = path or HARNESS_DIGESTS
    table = read_harness_digests(path)
    added = []
    for algo in algos:
        recorded = provenance(algo)
        added.append(dict(algo=algo, code=recorded["code"], harness=recorded["harness"], digest=harness_digest(algo),
                          commit=recorded["commit"], versions=recorded["versions"], cpu=recorded["cpu"],
                          cpu_flags=recorded["cpu_flags"]))  # fmt: skip
        print(json.dumps(added[-1]), flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([*table, *added], indent=1) + "\n")
    return added


def not_current(folders: list[Path]) -> dict[str, str]:
    """The runs of ``folders`` that the benchmark would make again now, with its reason."""
    from dataclasses import fields

    from sb3_trpo_ext.benchmark.cli import stale
    from sb3_trpo_ext.benchmark.run import RunSpec

    reasons = {}
    for folder in folders:
        for path in sorted(folder.glob("runs/*.json")):
            record = json.loads(path.read_text())
            spec = RunSpec(**{key.name: record[key.name] for key in fields(RunSpec) if key.name in record})
            reason = stale(spec, folder)
            if reason is not None:
                reasons[str(path)] = reason
    return reasons


@exits_on_missing_extra
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/behaviour.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", help="write the digests to this JSON file")
    parser.add_argument("--compare", help="a JSON file of digests: exit 1 if any run's differs")
    parser.add_argument("--runs", nargs="+", help="only these runs (default: all)")
    parser.add_argument("--harness", action="store_true", help="the harness digests of --algos instead")
    parser.add_argument("--algos", nargs="+", default=["trpo_ext", "trpo", "ppo"])
    parser.add_argument("--record", nargs="?", const=str(HARNESS_DIGESTS), help="add them to this table")
    parser.add_argument("--current", nargs="+", metavar="FOLDER", help="check that the benchmark reuses these runs")
    args = parser.parse_args(argv)
    require("bench", "python scripts/behaviour.py")
    require("mujoco", "python scripts/behaviour.py")
    if args.current:
        folders = [Path(folder) for folder in args.current]
        reasons = not_current(folders)
        for path, reason in reasons.items():
            print(f"{path}: {reason}")
        total = sum(len(list(folder.glob("runs/*.json"))) for folder in folders)
        print(f"{total - len(reasons)} of {total} runs current")
        return 1 if reasons else 0
    if args.harness:
        if args.record:
            record_harness_digests(args.algos, Path(args.record))
        else:
            for algo in args.algos:
                print(json.dumps({"algo": algo, "digest": harness_digest(algo)}), flush=True)
        return 0
    runs = [run for run in RUNS if args.runs is None or run.name in args.runs]
    digests = {}
    for run in runs:
        digests[run.name] = digest(run)
        print(json.dumps({"run": run.name, "digest": digests[run.name]}), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(digests, indent=1) + "\n")
    if args.compare:
        expected = json.loads(Path(args.compare).read_text())
        differing = [name for name, value in digests.items() if expected.get(name) != value]
        if differing:
            print(f"differ from {args.compare}: {', '.join(differing)}", file=sys.stderr)
            return 1
        print(f"all {len(digests)} digests equal those of {args.compare}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
