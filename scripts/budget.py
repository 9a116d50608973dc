"""
What choosing this TRPO's MuJoCo entries cost, from the committed records under ``benchmarks/results/development/``:
per task, the Optuna trials (``tuning/TASK.log``: complete, pruned, failed, and the environment steps they took),
the looks at variants of the entry on tuning seeds (``variants/TASK*.jsonl``: runs, configurations, steps), each over
every search behind the entry (``SEARCHES``), and the runs of the entry on seeds 0-4 made while entries were still
being chosen (every version of a run file of ``mujoco-1m*`` and ``tuned-300k`` in the git history: a run made again
rewrites its file).

    python scripts/budget.py                      # a markdown table
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEVELOPMENT_RESULTS = RESULTS / "development"
TASKS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Swimmer-v5", "Humanoid-v5")
#: The development folders of this TRPO's MuJoCo runs on seeds 0-4.
DEVELOPMENT = ("mujoco-1m", "mujoco-1m-seeds-3-4", "tuned-300k")
#: The studies and looks behind each task's entry, by the name of their files where it is not the task's own: Ant-v5's
#: entry was chosen again on the -v4 observation, and both searches count.
SEARCHES = {"Ant-v5": ("Ant-v5", "Ant-v5-no-cfrc")}


def searches(task: str) -> tuple[str, ...]:
    return SEARCHES.get(task, (task,))


def optuna_budget(task: str) -> dict[str, int]:
    """Trials by state and the environment steps they ran (a pruned trial up to its last evaluation), over the task's
    studies."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    counts = {"trials": 0, "complete": 0, "pruned": 0, "failed": 0, "steps": 0}
    for name in searches(task):
        storage = JournalStorage(JournalFileBackend(str(DEVELOPMENT_RESULTS / "tuning" / f"{name}.log")))
        study = optuna.load_study(study_name=name, storage=storage)
        command = study.user_attrs["command"]
        n_timesteps = int(float(re.search(r"-n (\S+)", command).group(1)))  # type: ignore[union-attr]
        n_evaluations = int(re.search(r"--n-evaluations (\d+)", command).group(1))  # type: ignore[union-attr]
        for trial in study.get_trials(deepcopy=False):
            counts["trials"] += 1
            state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(trial.state.name)
            if state:
                counts[state] += 1
            evaluations = max(trial.intermediate_values, default=0)
            counts["steps"] += n_timesteps if trial.state.name == "COMPLETE" else evaluations * n_timesteps // n_evaluations
    return counts


def variant_budget(task: str, long: bool) -> dict[str, int]:
    """The looks at variants on tuning seeds: at 1M steps (``long``) or shorter."""
    looks = []
    for name in searches(task):
        path = DEVELOPMENT_RESULTS / "variants" / f"{name}{'-1m' if long else ''}.jsonl"
        if path.exists():
            looks += [(name, json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return {
        "runs": len(looks),
        "configurations": len({(name, row["variant"]) for name, row in looks}),
        "steps": sum(int(row["curve_steps"][-1]) for _, row in looks),
    }


def _commits(*args: str) -> set[str]:
    return set(subprocess.run(["git", "log", "--no-renames", "--format=%H", *args], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.split())  # fmt: skip


def development_runs(task: str) -> dict[str, int]:
    """Versions of this TRPO's run files of ``task`` in the development folders, over the git history: each commit
    that wrote a file, where it is and where it was before the folders were grouped (moved, not written, then)."""
    versions, steps = 0, 0
    for folder in DEVELOPMENT:
        for path in sorted((DEVELOPMENT_RESULTS / folder / "runs").glob(f"{task}__trpo_ext__seed*.json")):
            before = (RESULTS / path.relative_to(DEVELOPMENT_RESULTS)).relative_to(ROOT).as_posix()
            commits = _commits("--diff-filter=AM", "--", before) | _commits("--diff-filter=M", "--", str(path))
            versions += len(commits)
            steps += len(commits) * json.loads(path.read_text())["n_timesteps"]
    return {"runs": versions, "steps": steps}


HEADER = (
    "| task | Optuna trials (complete, pruned, failed) | their steps | looks on tuning seeds, 300k: runs (configurations) "
    "| 1M: runs (configurations) | looks' steps | entry runs on seeds 0-4 while choosing | their steps | total steps |"
)


def task_budget(task: str) -> dict[str, dict[str, int]]:
    """Everything choosing ``task``'s entry took: the Optuna trials, the looks at 300k and at 1M, the entry's runs on
    seeds 0-4, and the total of their environment steps (``{"total": {"steps": ...}}``)."""
    parts = {
        "trials": optuna_budget(task),
        "short": variant_budget(task, long=False),
        "long": variant_budget(task, long=True),
        "development": development_runs(task),
    }
    return {**parts, "total": {"steps": sum(part["steps"] for part in parts.values())}}


def in_brief() -> dict[str, str]:
    """Per task, what choosing its entry took in a few words: Optuna trials, runs on seeds (looks at variants and the
    entry's own runs while choosing) and all their environment steps."""
    briefs = {}
    for task in TASKS:
        budget = task_budget(task)
        runs = sum(budget[part]["runs"] for part in ("short", "long", "development"))
        briefs[task] = f"{budget['trials']['trials']} trials, {runs} runs, {budget['total']['steps'] / 1e6:.1f}M steps"
    return briefs


def table() -> str:
    """The budget of each task, as a markdown table."""
    lines = [HEADER, "|---|---|---|---|---|---|---|---|---|"]
    for task in TASKS:
        budget = task_budget(task)
        trials, short, long, development = (budget[key] for key in ("trials", "short", "long", "development"))
        cells = [
            task,
            f"{trials['trials']} ({trials['complete']}, {trials['pruned']}, {trials['failed']})",
            f"{trials['steps'] / 1e6:.1f}M",
            f"{short['runs']} ({short['configurations']})",
            f"{long['runs']} ({long['configurations']})",
            f"{(short['steps'] + long['steps']) / 1e6:.1f}M",
            str(development["runs"]),
            f"{development['steps'] / 1e6:.1f}M",
            f"{budget['total']['steps'] / 1e6:.1f}M",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/budget.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args(argv)
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
