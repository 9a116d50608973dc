r"""
Results of a benchmark: CSV and JSON of every run, a Markdown table (mean ± sample std over seeds, ratios to sb3-contrib's
TRPO), learning curves and a bar chart of speed ratios. The benchmark writes them after its runs; this rewrites them
from a folder's run files without running anything, with a baseline's runs of a variant of its entry (``entry_variants``
files) reported instead of its runs of the entry where they do better on average, and this TRPO's reporting runs of an
entry frozen later (another benchmark folder) reported instead of its runs of the earlier entry of that task, and the
tasks of other folders beside them, each at its own budget:

    python -m sb3_trpo_ext.benchmark.report --output benchmarks/results/mujoco-1m-report \
        --alternatives benchmarks/results/ant-observation/trpo.jsonl --entries benchmarks/results/ant-1m-report \
        --tasks benchmarks/results/humanoid-2m-report benchmarks/results/humanoid-2m-baselines
"""

import argparse
import json
import shlex
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sb3_trpo_ext.benchmark.settings import ALGORITHMS, REFERENCE
from sb3_trpo_ext.zoo import ALGO

#: rl-baselines3-zoo's published sb3-contrib TRPO results (benchmark.md of rl-baselines3-zoo: one run each, 1M steps,
#: the -v3 versions of these tasks): the budget they were measured at and the return, by the -v5 task compared here.
PUBLISHED_BUDGET = 1_000_000
PUBLISHED = {"HalfCheetah-v5": 1785, "Hopper-v5": 3618, "Walker2d-v5": 4933, "Ant-v5": 4982, "Swimmer-v5": 366}
#: The same table's SB3 PPO results (one run each, 1M steps, -v3).
PUBLISHED_PPO = {"HalfCheetah-v5": 5819, "Hopper-v5": 2410, "Walker2d-v5": 3479, "Ant-v5": 1327, "Swimmer-v5": 282}

#: What each TRPO logged about its updates (mean over updates, then over seeds), for diagnosing a difference.
#: sb3-contrib logs its KL averaged over action dimensions (kl_divergence_loss); this TRPO logs the true KL.
DIAGNOSTICS = {
    "train/kl_divergence": "KL after step",
    "train/kl_divergence_loss": "KL after step (sb3-contrib: per action dimension)",
    "train/max_kl": "max per-state KL",
    "train/is_line_search_success": "line search accepted",
    "train/line_search_steps": "line-search candidates",
    "train/step_size": "step size",
    "train/cg_iterations": "CG iterations",
    "train/explained_variance": "explained variance",
    "train/std": "policy std",
}

SCALARS = [
    "env_id",
    "algo",
    "label",
    "seed",
    "same_settings",
    "entry",
    "n_envs",
    "normalize",
    "n_timesteps",
    "timesteps_done",
    "final_return",
    "wall_seconds",
    "eval_seconds",
    "rollout_seconds",
    "train_seconds",
    "n_updates",
    "train_ms_per_update",
    "steps_per_second",
    "env_only_steps_per_second",
    "fisher_products_per_update",
    "peak_memory_mib",
]


def load_runs(output_dir: str | Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(Path(output_dir, "runs").glob("*.json"))]


def load_variant_runs(paths: list[str | Path]) -> list[dict[str, Any]]:
    """
    The runs of ``entry_variants`` files (JSON lines) in the terms of the report's run records: ``env_id``, ``algo``,
    ``seed``, ``n_timesteps``, ``final_return``, ``curve_steps``, ``curve_returns``, and the ``variant``. A run made again
    (``entry_variants`` appends it when the code or versions behind it changed) replaces its earlier line.
    """
    runs: dict[tuple, dict[str, Any]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            run = dict(
                env_id=record["env"],
                algo=record.get("algo", ALGO),
                seed=record["seed"],
                n_timesteps=record["n_timesteps"],
                final_return=record["final_return"],
                curve_steps=record["curve_steps"],
                curve_returns=record["curve_returns"],
                variant=record["variant"],
            )
            runs[(run["env_id"], run["algo"], run["variant"], run["seed"])] = run
    return list(runs.values())


def with_baseline_variants(
    table: pd.DataFrame, curves: pd.DataFrame, variant_runs: list[dict[str, Any]]
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """
    The final returns and curves to report, and a line per choice made: for each task and baseline with runs of a
    variant of its entry, the variant's runs replace the entry's where their mean final return is higher (the baselines
    get the better of the two; this TRPO's entries are frozen, so a variant of them is refused). One variant per task
    and baseline, at the entry runs' budget. The reported table gains a ``variant`` column ("" for the entry as is).
    """
    table, curves = table.assign(variant=""), curves.copy()
    lines: list[str] = []
    if not variant_runs:
        return table, curves, lines
    for (env_id, algo), group in pd.DataFrame(variant_runs).groupby(["env_id", "algo"], sort=False):
        if algo == ALGO:
            raise ValueError(f"{env_id}: a variant of {ALGORITHMS[ALGO]}'s entry is not reported, its entries are frozen")
        variants = sorted(set(group["variant"]))
        if len(variants) != 1:
            raise ValueError(f"{env_id}, {algo}: one variant may stand against the entry, got {variants}")
        entry = table[(table["env_id"] == env_id) & (table["algo"] == algo)]
        if entry.empty or set(entry["n_timesteps"]) != set(group["n_timesteps"]):
            raise ValueError(
                f"{env_id}, {algo}: the variant's runs have {sorted(set(group['n_timesteps']))} steps, the entry's "
                f"{sorted(set(entry['n_timesteps']))}: only runs of one budget compare"
            )
        better = group["final_return"].mean() > entry["final_return"].mean()
        lines.append(
            f"- {env_id}, {ALGORITHMS[algo]}: `{variants[0]}` {_mean_range(group)}, the entry as is "
            f"{_mean_range(entry)}; reported: {'the variant' if better else 'the entry as is'}"
        )
        if better:
            columns = ["env_id", "algo", "seed", "n_timesteps", "final_return", "variant"]
            table = pd.concat([table.drop(entry.index), group[columns]], ignore_index=True)
            replaced = (curves["env_id"] == env_id) & (curves["algo"] == algo)
            variant_curves = curves_table(group.to_dict("records"))
            curves = pd.concat([curves[~replaced], variant_curves], ignore_index=True)
    return table, curves, lines


def with_newer_entries(
    table: pd.DataFrame, curves: pd.DataFrame, newer_runs: list[dict[str, Any]]
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """
    The final returns and curves to report, and a line per task, where this TRPO's entry of a task was frozen again
    after its reporting runs: the newer entry's reporting runs (``newer_runs``) replace the earlier entry's, whatever
    either shows. They must be this TRPO's, at the earlier runs' budget, on seeds none of the earlier runs used.
    """
    lines: list[str] = []
    if not newer_runs:
        return table, curves, lines
    newer, newer_curves = runs_table(newer_runs), curves_table(newer_runs)
    _refuse_repeats(newer)
    order = {env_id: i for i, env_id in enumerate(dict.fromkeys([*table["env_id"], *newer["env_id"]]))}

    def in_task_order(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.sort_values("env_id", key=lambda column: column.map(order), kind="stable", ignore_index=True)

    for env_id, group in newer.groupby("env_id", sort=False):
        if set(group["algo"]) != {ALGO}:
            raise ValueError(f"{env_id}: only {ALGORITHMS[ALGO]}'s entries are frozen again, got {sorted(set(group['algo']))}")
        earlier = table[(table["env_id"] == env_id) & (table["algo"] == ALGO)]
        if earlier.empty:
            tasks = sorted(set(table.loc[table["algo"] == ALGO, "env_id"]))
            raise ValueError(
                f"{env_id}: the benchmark folder has no runs of {ALGORITHMS[ALGO]}'s earlier entry of it to replace "
                f"(it has {tasks}); a task of its own is added with --tasks"
            )
        if set(earlier["n_timesteps"]) != set(group["n_timesteps"]):
            raise ValueError(
                f"{env_id}: the newer entry's runs have {sorted(set(group['n_timesteps']))} steps, the earlier entry's "
                f"{sorted(set(earlier['n_timesteps']))}: only runs of one budget replace each other"
            )
        if set(group["seed"]) & set(earlier["seed"]):
            raise ValueError(
                f"{env_id}: the newer entry's seeds {_seeds(group['seed'])} must be fresh, "
                f"the earlier entry used {_seeds(earlier['seed'])}"
            )
        lines.append(
            f"- {env_id}, {ALGORITHMS[ALGO]}: the newer entry {_mean_range(group)} replaces the earlier {_mean_range(earlier)}"
        )
        table = pd.concat([table.drop(earlier.index), group], ignore_index=True)
        replaced = (curves["env_id"] == env_id) & (curves["algo"] == ALGO)
        curves = pd.concat([curves[~replaced], newer_curves[newer_curves["env_id"] == env_id]], ignore_index=True)
    return in_task_order(table), in_task_order(curves), lines


def with_other_tasks(
    table: pd.DataFrame, curves: pd.DataFrame, other_runs: list[dict[str, Any]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """
    The final returns and curves with the runs of tasks the benchmark folder has none of (``other_runs``, from other
    benchmark folders), each task at its own budget: Humanoid-v5 at 2M steps beside the 1M tasks.
    """
    if not other_runs:
        return table, curves
    other = runs_table(other_runs)
    _refuse_repeats(other)
    for env_id, group in other.groupby("env_id", sort=False):
        if env_id in set(table["env_id"]):
            raise ValueError(
                f"{env_id}: the benchmark folder has runs of it already; another folder adds a task it has none of"
            )
        if group["n_timesteps"].nunique() != 1:
            raise ValueError(f"{env_id}: runs of one budget make a row, got {sorted(set(group['n_timesteps']))}")
    return pd.concat([table, other], ignore_index=True), pd.concat([curves, curves_table(other_runs)], ignore_index=True)


def _refuse_repeats(runs: pd.DataFrame) -> None:
    """A run given twice (a folder named twice, or two folders holding one task) would count twice."""
    repeated = runs[runs.duplicated(["env_id", "algo", "seed"])]
    if not repeated.empty:
        first = repeated.iloc[0]
        raise ValueError(
            f"{first['env_id']}: {ALGORITHMS.get(first['algo'], first['algo'])}'s run of seed {first['seed']} is given "
            "twice; name each folder once, and one folder per task"
        )


def _mean_range(runs: pd.DataFrame) -> str:
    returns = runs["final_return"]
    return f"{returns.mean():.1f} [{returns.min():.1f}, {returns.max():.1f}] (seeds {_seeds(runs['seed'])})"


def runs_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: the scalar measurements, the CPU it ran on (None where not recorded), the fraction of the
    env-only rate, and the mean train/ logs."""
    rows = []
    for run in runs:
        row = {key: run[key] for key in SCALARS}
        row["cpu"] = run.get("provenance", {}).get("cpu")
        row["fraction_of_env_rate"] = run["steps_per_second"] / run["env_only_steps_per_second"]
        row.update(run["train_log_means"])
        rows.append(row)
    return pd.DataFrame(rows)


def curves_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per evaluation: its step, return and the seconds spent learning until then (NaN in older runs)."""
    rows = []
    for run in runs:
        seconds = run.get("curve_seconds") or [np.nan] * len(run["curve_steps"])
        rows += [
            dict(env_id=run["env_id"], algo=run["algo"], seed=run["seed"], step=step, seconds=second, mean_return=value)
            for step, second, value in zip(run["curve_steps"], seconds, run["curve_returns"], strict=True)
        ]
    return pd.DataFrame(rows)


def normalized_scores(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """
    Each algorithm's final returns as a (runs, tasks) matrix over the tasks with a published sb3-contrib TRPO return,
    each divided by it (1.0: the published return). The runs are each task's lowest ``n`` seeds, ``n`` the fewest any
    task has: a task's seeds may differ from another's (an entry frozen later runs fresh ones), and rliable resamples
    each task's runs apart, so which run of one task stands beside which of another changes nothing.
    """
    envs = [env for env in dict.fromkeys(table["env_id"]) if env in PUBLISHED]
    scores = {}
    for algo in [algo for algo in ALGORITHMS if algo in set(table["algo"])]:
        runs = table[(table["algo"] == algo) & table["env_id"].isin(envs)]
        columns = [runs.loc[runs["env_id"] == env].sort_values("seed")["final_return"].to_numpy(dtype=float) for env in envs]
        n_runs = min((len(column) for column in columns), default=0)
        if n_runs:
            matrix = np.stack([column[:n_runs] for column in columns], axis=1)
            scores[algo] = matrix / np.array([PUBLISHED[env] for env in envs])
    return scores


#: The runs per task below which an interval is printed but read as saying nothing: resampling two to four runs a task
#: gives intervals far narrower than the seeds' spread warrants (with three, a per-task IQM is their mean, its interval
#: their [min, max]).
MIN_RUNS_FOR_A_VERDICT = 5


def _interval(scores: dict[str, Any], function: Any, reps: int, seed: int) -> tuple[dict, dict]:
    """rliable's point estimates and 95% stratified-bootstrap intervals, reproducible from ``seed``."""
    from rliable import library as rly

    # rliable's independent-samples bootstrap (the probability of improvement's) draws from numpy's global generator,
    # whatever random_state says: seed that too, and give it back as it was.
    global_state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            # rliable seeds arch's bootstrap the way arch now deprecates; the estimates are the same.
            warnings.filterwarnings("ignore", category=FutureWarning, module="arch")
            return rly.get_interval_estimates(scores, function, reps=reps, random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(global_state)


def aggregate_lines(table: pd.DataFrame, reps: int = 2000, seed: int = 0) -> list[str]:
    """
    rliable's aggregates over every task and run, on scores normalised by the published sb3-contrib TRPO returns
    (:func:`normalized_scores`): each algorithm's interquartile mean with a 95% stratified-bootstrap interval, the
    probability that a run of this TRPO beats one of each other algorithm, and in words what the intervals separate.
    """
    from rliable import metrics

    scores = normalized_scores(table)
    if not scores:
        return ["No task with a published sb3-contrib TRPO return has runs of every algorithm: no aggregate."]
    n_tasks = next(iter(scores.values())).shape[1]
    point, ci = _interval(scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps, seed)
    lines = [
        f"Over {n_tasks} tasks, scores divided by rl-zoo's published sb3-contrib TRPO return of each task; "
        "interquartile mean over all runs and tasks, 95% stratified-bootstrap interval:",
        "",
        "| algorithm | runs per task | IQM of normalised scores [95% CI] |",
        "|---|---|---|",
    ]
    for algo, matrix in scores.items():
        lines.append(
            f"| {ALGORITHMS[algo]} | {len(matrix)} | {point[algo][0]:.2f} [{ci[algo][0][0]:.2f}, {ci[algo][1][0]:.2f}] |"
        )
    others = [algo for algo in scores if algo != ALGO]
    if ALGO in scores and others:
        pairs = {algo: [scores[ALGO], scores[algo]] for algo in others}
        improvement, improvement_ci = _interval(pairs, metrics.probability_of_improvement, reps, seed)
        lines += [
            "",
            f"Probability that a run of {ALGORITHMS[ALGO]} beats a run of the other, averaged over tasks (95% CI):",
            "",
        ]
        for algo in others:
            low, high = np.ravel(improvement_ci[algo])
            value = float(np.ravel(improvement[algo])[0])
            runs = min(len(scores[ALGO]), len(scores[algo]))
            if runs < MIN_RUNS_FOR_A_VERDICT:
                verdict = f"{runs} runs per task are too few for a bootstrap interval to be trusted: no verdict"
            elif low > 0.5:
                verdict = f"the data support that {ALGORITHMS[ALGO]} tends to beat {ALGORITHMS[algo]} on these tasks"
            elif high < 0.5:
                verdict = f"the data support that {ALGORITHMS[algo]} tends to beat {ALGORITHMS[ALGO]} on these tasks"
            else:
                verdict = "the interval includes 0.5: these runs cannot tell which tends to win"
            lines.append(f"- over {ALGORITHMS[algo]}: {value:.2f} [{low:.2f}, {high:.2f}]; {verdict}")
    lines += [
        "",
        f"With {min(len(matrix) for matrix in scores.values())} to {max(len(m) for m in scores.values())} runs per "
        "task an interval is wide, and a difference within the tasks' seed-to-seed spread is not separated; the "
        "aggregates say nothing of a task alone.",
    ]
    return lines


def plot_performance_profiles(table: pd.DataFrame, path: Path, reps: int = 2000, seed: int = 0) -> None:
    """rliable's performance profiles of the normalised scores: the fraction of runs above each score tau."""
    from rliable import library as rly
    from rliable import plot_utils

    scores = {ALGORITHMS[algo]: matrix for algo, matrix in normalized_scores(table).items()}
    if not scores:
        return
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    taus = np.linspace(0.0, max(2.0, max(float(m.max()) for m in scores.values())), 81)
    global_state = np.random.get_state()
    np.random.seed(seed)  # the bootstrap of the intervals draws from numpy's global generator
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="arch")
            profiles, intervals = rly.create_performance_profile(scores, taus, reps=reps)
    finally:
        np.random.set_state(global_state)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(
        profiles, taus, performance_profile_cis=intervals, xlabel=r"score / published sb3-contrib TRPO return $\tau$", ax=axis
    )
    axis.legend(axis.get_lines(), list(scores), loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def returns_lines(table: pd.DataFrame) -> list[str]:
    """
    Markdown rows of the final returns: per task and algorithm, the mean over seeds with its [min, max] and each
    seed's value, and rl-zoo's published sb3-contrib TRPO and PPO returns where the runs have their budget.
    """
    algos = [algo for algo in ALGORITHMS if algo in set(table["algo"])]
    lines = [
        "| task | steps | "
        + " | ".join(ALGORITHMS[algo] for algo in algos)
        + " | published sb3-contrib TRPO | published PPO |",
        "|---|---|" + "---|" * (len(algos) + 2),
    ]
    for env_id, runs in table.groupby("env_id", sort=False):
        budgets = set(runs["n_timesteps"])
        cells = []
        for algo in algos:
            group = runs[runs["algo"] == algo].sort_values("seed")
            returns = group["final_return"]
            if group.empty:
                cells.append("–")
            elif len(group) == 1:  # no spread to show, and the one seed need not be seed 0
                cells.append(f"{returns.iloc[0]:.1f} (seed {group['seed'].iloc[0]} only)")
            else:
                seeds = ", ".join(f"{value:.1f}" for value in returns)
                cells.append(
                    f"{returns.mean():.1f} [{returns.min():.1f}, {returns.max():.1f}] (seeds {_seeds(group['seed'])}: {seeds})"
                )
        published = [table.get(str(env_id)) if budgets == {PUBLISHED_BUDGET} else None for table in (PUBLISHED, PUBLISHED_PPO)]
        budget = "/".join(f"{int(steps):,}" for steps in sorted(budgets))
        lines.append(
            f"| {env_id} | {budget} | " + " | ".join(cells) + " | " + " | ".join(str(p or "–") for p in published) + " |"
        )
    return lines


def readme_table(
    table: pd.DataFrame,
    tuning: dict[str, str] | None = None,
    times: dict[tuple[str, str], tuple[float, int, int]] | None = None,
) -> list[str]:
    """
    The README's table of final returns: per task, each algorithm's mean [min, max] over its seeds (named in the header
    where most tasks have them, else in the cell; this TRPO's cell says so where its mean is below sb3-contrib's
    TRPO's; marked † where a baseline's variant of its entry is reported,
    :func:`with_baseline_variants`), rl-zoo's published sb3-contrib TRPO and PPO returns (-v3 tasks, one run each)
    and, given ``tuning``, what choosing this TRPO's entry of each task took (``scripts/budget.py``; the
    baselines' entries are rl-zoo's, not tuned here); given ``times`` (:func:`times_to_return`), each algorithm's
    median seconds to the published sb3-contrib TRPO return. The tasks with a published return come first, then the
    others (:func:`with_other_tasks`); the header names the budget most tasks have, a task with another names its own.
    """
    if table.empty:
        raise ValueError("no runs to make a table of")
    algos = [algo for algo in ALGORITHMS if algo in set(table["algo"])]
    variants = table["variant"] if "variant" in table else pd.Series("", index=table.index)
    usual = {algo: _usual_seeds(table[table["algo"] == algo]) for algo in algos}
    headers = [f"{ALGORITHMS[algo]}, seeds {_seeds(usual[algo])}" for algo in algos]
    headers += ["published sb3-contrib TRPO", "published PPO"] + (["this TRPO's tuning"] if tuning else [])
    if times:
        headers.append("median seconds to the published TRPO return (" + " / ".join(ALGORITHMS[a] for a in algos) + ")")
    budgets = table.groupby("env_id", sort=False)["n_timesteps"].max()
    usual_budget = next(budget for budget in budgets if budget in set(budgets.mode()))  # most tasks', the first's in a tie
    lines = [f"| task ({_steps(usual_budget)} steps) | " + " | ".join(headers) + " |", "|---|" + "---|" * len(headers)]
    tasks = [env for env in PUBLISHED if env in set(table["env_id"])]
    for env_id in tasks + [env for env in dict.fromkeys(table["env_id"]) if env not in tasks]:
        cells = []
        reference = table.loc[(table["env_id"] == env_id) & (table["algo"] == REFERENCE), "final_return"]
        for algo in algos:
            chosen = (table["env_id"] == env_id) & (table["algo"] == algo)
            returns = table.loc[chosen, "final_return"]
            mark = " †" if (variants[chosen] != "").any() else ""
            if returns.size and set(table.loc[chosen, "seed"]) != usual[algo]:  # not the header's
                mark += f" (seeds {_seeds(table.loc[chosen, 'seed'])})"
            if algo == ALGO and len(returns) and len(reference) and returns.mean() < reference.mean():
                mark += f", below {ALGORITHMS[REFERENCE]}"
            cells.append(f"{returns.mean():.1f} [{returns.min():.1f}, {returns.max():.1f}]{mark}" if len(returns) else "–")
        at_published_budget = budgets[env_id] == PUBLISHED_BUDGET
        cells += [str(published.get(env_id, "–")) if at_published_budget else "–" for published in (PUBLISHED, PUBLISHED_PPO)]
        if tuning:
            cells.append(tuning.get(env_id, "–"))
        if times:
            cells.append(" / ".join(_seconds(times.get((env_id, algo), (float("nan"), 0, 0))[0]) for algo in algos))
        label = env_id if budgets[env_id] == usual_budget else f"{env_id} ({_steps(budgets[env_id])} steps)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _steps(n: float) -> str:
    """1000000 -> "1M", 300000 -> "300k"."""
    return f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}k" if n >= 1e3 else f"{n:g}"


def _usual_seeds(runs: pd.DataFrame) -> set[int]:
    """The seeds most tasks of ``runs`` were run on (in a tie, the most seeds, then the first task's)."""
    seed_sets: list[frozenset[int]] = [
        frozenset(int(seed) for seed in task["seed"]) for _, task in runs.groupby("env_id", sort=False)
    ]

    def how_usual(seeds: frozenset[int]) -> tuple[int, int]:
        return seed_sets.count(seeds), len(seeds)

    return set(sorted(seed_sets, key=how_usual, reverse=True)[0]) if seed_sets else set()


def _seeds(seeds: Iterable[Any]) -> str:
    """The seeds as "a-b" where they run without a gap, else listed."""
    ordered = sorted({int(seed) for seed in seeds})
    if len(ordered) > 1 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ", ".join(map(str, ordered))


def _mean_std(values: pd.Series, digits: int) -> str:
    if values.isna().all():
        return "–"
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {std:.{digits}f}"


def _ratio(value: float, reference: float | None) -> str:
    if reference is None or not np.isfinite(reference) or reference == 0:
        return "–"
    return f"{value / reference:.2f}×"


def speeds_comparable(table: pd.DataFrame) -> bool:
    """Whether the runs' speeds may be compared: every run with the same settings for both TRPOs (``--same-settings``)
    and recorded on one CPU model."""
    cpus = set(table["cpu"]) if "cpu" in table else {None}
    same_settings = "same_settings" in table and bool(table["same_settings"].all())
    return same_settings and len(cpus) == 1 and None not in cpus


def speed_lines(table: pd.DataFrame) -> list[str]:
    """
    Markdown rows of each algorithm's speed against sb3-contrib's TRPO, seed by seed on the same machine and settings
    (:func:`speeds_comparable`; none otherwise): per task, the median [min, max] over seeds of the ratio of
    ``train()`` times per update, of rollout times per step (above 1: faster than sb3-contrib) and of steps per second.
    """
    if not speeds_comparable(table) or REFERENCE not in set(table["algo"]):
        return []
    table = table.assign(rollout_per_step=table["rollout_seconds"] / table["timesteps_done"])
    lines = [
        f"Against {ALGORITHMS[REFERENCE]}, per seed (median [min, max] over seeds; above 1: faster), on "
        f"{table['cpu'].iloc[0]}:",
        "",
        "| task | algorithm | seeds | train() speed-up | rollout speed-up | steps/s ratio |",
        "|---|---|---|---|---|---|",
    ]
    for env_id, runs in table.groupby("env_id", sort=False):
        reference = runs[runs["algo"] == REFERENCE].set_index("seed")
        for algo in [algo for algo in ALGORITHMS if algo in set(runs["algo"]) and algo != REFERENCE]:
            ours = runs[runs["algo"] == algo].set_index("seed")
            seeds = sorted(set(ours.index) & set(reference.index))
            if not seeds:
                continue
            ratios = {
                "train": reference.loc[seeds, "train_ms_per_update"] / ours.loc[seeds, "train_ms_per_update"],
                "rollout": reference.loc[seeds, "rollout_per_step"] / ours.loc[seeds, "rollout_per_step"],
                "steps": ours.loc[seeds, "steps_per_second"] / reference.loc[seeds, "steps_per_second"],
            }
            cells = [f"{r.median():.2f}× [{r.min():.2f}, {r.max():.2f}]" for r in ratios.values()]
            lines.append(f"| {env_id} | {ALGORITHMS[algo]} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def times_to_return(curves: pd.DataFrame) -> dict[tuple[str, str], tuple[float, int, int]]:
    """
    (task, algorithm) -> the seconds of learning it took to reach the published sb3-contrib TRPO return of the task:
    each run's time at its first evaluation at or above it, their median over seeds (a seed that never got there
    counts as slower than all that did: inf when most did not; NaN where the runs record no times, as
    ``entry_variants`` files), the seeds that got there and the seeds. The times are the machine's of the runs.
    """
    times = {}
    for (env_id, algo), runs in curves[curves["env_id"].isin(list(PUBLISHED))].groupby(["env_id", "algo"], sort=False):
        if runs["seconds"].isna().any():
            times[env_id, algo] = (float("nan"), 0, runs["seed"].nunique())
            continue
        firsts = [run.loc[run["mean_return"] >= PUBLISHED[env_id], "seconds"].min() for _, run in runs.groupby("seed")]
        median = float(np.median([np.inf if np.isnan(first) else first for first in firsts]))
        times[env_id, algo] = (median, sum(not np.isnan(first) for first in firsts), len(firsts))
    return times


def _seconds(median: float) -> str:
    return "–" if np.isnan(median) else "none" if np.isinf(median) else f"{median:.0f}"


def time_to_return_lines(curves: pd.DataFrame) -> list[str]:
    """The table of :func:`times_to_return`: median seconds (seeds that got there / seeds) per task and algorithm."""
    times = times_to_return(curves)
    envs = [env for env in PUBLISHED if any(key[0] == env for key in times)]
    algos = [algo for algo in ALGORITHMS if any(key[1] == algo for key in times)]
    if not envs:
        return []
    lines = ["| task | return | " + " | ".join(ALGORITHMS[algo] for algo in algos) + " |", "|---|---|" + "---|" * len(algos)]
    for env_id in envs:
        cells = [
            f"{_seconds(times[env_id, algo][0])} ({times[env_id, algo][1]}/{times[env_id, algo][2]})"
            if (env_id, algo) in times else "–"
            for algo in algos
        ]  # fmt: skip
        lines.append(f"| {env_id} | {PUBLISHED[env_id]} | " + " | ".join(cells) + " |")
    return lines


def markdown_summary(
    table: pd.DataFrame,
    command: str = "",
    reported: pd.DataFrame | None = None,
    choices: list[str] | None = None,
    curves: pd.DataFrame | None = None,
    replaced: list[str] | None = None,
) -> str:
    """
    Per environment: final return and speed, each as mean ± std over seeds; the speed ratios to sb3-contrib's TRPO
    only where the speeds compare (:func:`speeds_comparable`). The final returns and rliable's aggregates are those of
    ``reported`` (default: ``table``), after the ``choices`` between a baseline's entry and a variant of it
    (:func:`with_baseline_variants`); ``replaced``: the lines of :func:`with_newer_entries`.
    """
    reported = table if reported is None else reported
    lines = ["Command: " + ", then ".join(f"`{line}`" for line in command.splitlines()), ""] if command else []
    comparable = speeds_comparable(table)
    if not comparable:
        lines += [
            "These runs were made with each algorithm's own settings, or on more than one machine (or one not recorded):"
            " their speeds are listed, not compared.",
            "",
        ]
    header = (
        "| algorithm | seeds | steps | final return | train() ms/update | train() time vs sb3-contrib | steps/s "
        "| steps/s vs sb3-contrib | of env-only rate | Fisher products/update | peak MiB |"
    )
    for env_id, runs in table.groupby("env_id", sort=False):
        means = runs.groupby("algo")[["train_ms_per_update", "steps_per_second"]].mean()
        has_reference = comparable and REFERENCE in means.index
        reference = means.loc[REFERENCE] if has_reference else {key: None for key in means.columns}
        lines += [f"### {env_id}", "", header, "|" + "---|" * (header.count("|") - 1)]
        for algo in [algo for algo in ALGORITHMS if algo in set(runs["algo"])]:
            group = runs[runs["algo"] == algo]
            products = group["fisher_products_per_update"].astype(float)
            lines.append(
                f"| {ALGORITHMS[algo]} | {len(group)} | {int(group['timesteps_done'].median())} "
                f"| {_mean_std(group['final_return'], 1)} | {_mean_std(group['train_ms_per_update'], 1)} "
                f"| {_ratio(means.loc[algo, 'train_ms_per_update'], reference['train_ms_per_update'])} "
                f"| {_mean_std(group['steps_per_second'], 0)} "
                f"| {_ratio(means.loc[algo, 'steps_per_second'], reference['steps_per_second'])} "
                f"| {group['fraction_of_env_rate'].mean():.0%} | {_mean_std(products, 1)} "
                f"| {group['peak_memory_mib'].mean():.0f} |"
            )
        lines += ["", *diagnostics_table(runs), ""]
    speeds = speed_lines(table)
    if speeds:
        lines += ["### Speed", "", *speeds, ""]
    if replaced:
        lines += [f"### {ALGORITHMS[ALGO]}'s entries frozen later", "", "Mean [min, max] over seeds:", "", *replaced, ""]
    if choices:
        lines += ["### The baselines' entries and their variants", "", "Mean [min, max] over seeds:", "", *choices, ""]
    lines += ["### Final returns", "", "Mean over seeds [min, max] (each seed's value, seeds in order):", ""]
    lines += [*returns_lines(reported), "", "### Aggregate (rliable)", "", *aggregate_lines(reported), ""]
    times = time_to_return_lines(curves) if curves is not None else []
    if times:
        lines += [
            "### Time to the published sb3-contrib TRPO return",
            "",
            "Median seconds of learning over seeds (seeds that got there / seeds; none: most seeds never did; –: no times"
            " recorded), on the machine of the runs:",
            "",
            *times,
            "",
        ]
    return "\n".join(lines)


def diagnostics_table(runs: pd.DataFrame) -> list[str]:
    """Markdown rows of the logged update statistics, one column per algorithm that logged any."""
    algos = [algo for algo in ALGORITHMS if algo in set(runs["algo"]) and algo != "ppo"]
    keys = [key for key in DIAGNOSTICS if key in runs and runs.loc[runs["algo"].isin(algos), key].notna().any()]
    if not algos or not keys:
        return []
    rows = [
        "| update statistic (mean) | " + " | ".join(ALGORITHMS[algo] for algo in algos) + " |",
        "|---|" + "---|" * len(algos),
    ]
    for key in keys:
        values = [runs.loc[runs["algo"] == algo, key].mean() for algo in algos]
        rows.append(f"| {DIAGNOSTICS[key]} | " + " | ".join("–" if np.isnan(v) else f"{v:.4g}" for v in values) + " |")
    return rows


def plot_learning_curves(curves: pd.DataFrame, path: Path, x: str = "step") -> None:
    """
    Mean deterministic return per algorithm against ``x`` (``"step"``, or ``"seconds"`` of learning), with a band of
    ± one standard deviation across seeds. Against seconds, each algorithm's curve ends where its shortest seed ends.
    """
    import matplotlib.pyplot as plt

    figure = learning_curves_figure(curves, x)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def learning_curves_figure(curves: pd.DataFrame, x: str = "step") -> Any:
    """The figure ``plot_learning_curves`` saves: one panel per task, one colour per algorithm in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {algo: f"C{index}" for index, algo in enumerate(ALGORITHMS)}
    envs = list(dict.fromkeys(curves["env_id"]))
    columns = min(len(envs), 4)
    rows = -(-len(envs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False)
    for ax, env_id in zip(axes.flat, envs, strict=False):
        for algo in [algo for algo in ALGORITHMS if algo in set(curves["algo"])]:
            runs = curves[(curves["env_id"] == env_id) & (curves["algo"] == algo)].dropna(subset=[x])
            if runs.empty:
                continue
            # Seeds are evaluated at slightly different steps (rollouts end past a threshold) and times: interpolate.
            grid = np.unique(runs[x])
            grid = grid[grid <= runs.groupby("seed")[x].max().min()]
            values = np.array(
                [np.interp(grid, seed_runs[x], seed_runs["mean_return"]) for _, seed_runs in runs.groupby("seed")]
            )
            mean = values.mean(axis=0)
            std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
            ax.plot(grid, mean, label=ALGORITHMS[algo], color=colours[algo])
            ax.fill_between(grid, mean - std, mean + std, alpha=0.2, color=colours[algo])
        ax.set_title(env_id)
        ax.set_xlabel("steps" if x == "step" else "seconds of learning (evaluations excluded)")
        ax.set_ylabel("deterministic return")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(envs) :]:
        ax.set_visible(False)
    # One legend for the figure: the first panel may lack an algorithm that others have.
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    axes.flat[0].legend(list(handles.values()), list(handles), fontsize="small")
    figure.tight_layout()
    return figure


def plot_speed_ratios(table: pd.DataFrame, path: Path) -> None:
    """Per environment, each algorithm's speed relative to sb3-contrib's TRPO (above 1: faster)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = table.groupby(["env_id", "algo"], sort=False)[["train_ms_per_update", "steps_per_second"]].mean()
    envs = [env for env in dict.fromkeys(table["env_id"]) if (env, REFERENCE) in means.index]
    others = [algo for algo in ALGORITHMS if algo != REFERENCE and algo in set(table["algo"])]
    panels = [
        (
            "train() speed-up: sb3-contrib ms / ms",
            lambda env, algo: (
                means.loc[(env, REFERENCE), "train_ms_per_update"] / means.loc[(env, algo), "train_ms_per_update"]
            ),
        ),
        (
            "end-to-end steps/s ÷ sb3-contrib's",
            lambda env, algo: means.loc[(env, algo), "steps_per_second"] / means.loc[(env, REFERENCE), "steps_per_second"],
        ),
    ]
    figure, axes = plt.subplots(1, 2, figsize=(max(6, 1.3 * len(envs) + 3) * 2, 3.8), squeeze=False)
    width = 0.8 / max(len(others), 1)
    for ax, (title, ratio) in zip(axes.flat, panels, strict=True):
        for index, algo in enumerate(others):
            values = [ratio(env, algo) if (env, algo) in means.index else np.nan for env in envs]
            ax.bar(np.arange(len(envs)) + index * width, values, width, label=ALGORITHMS[algo])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(envs)) + width * (len(others) - 1) / 2, envs, rotation=20, fontsize="small")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(
    output_dir: str | Path,
    command: str = "",
    alternatives: list[str | Path] | None = None,
    entries: list[str | Path] | None = None,
    tasks: list[str | Path] | None = None,
) -> pd.DataFrame:
    """
    Write runs.csv, runs.json, curves.csv, summary.md, learning_curves.png (and learning_curves_time.png, against
    seconds of learning), performance_profile.png (rliable's, over the tasks with a published return) and, where the
    speeds compare, speed_ratios.png. ``entries``: benchmark folders of this TRPO's entries frozen later, whose runs
    replace those of the earlier entry of their task (:func:`with_newer_entries`). ``alternatives``: ``entry_variants``
    files of the baselines, whose runs are reported instead of the entry's where they do better
    (:func:`with_baseline_variants`). ``tasks``: benchmark folders of tasks ``output_dir`` has no runs of, reported
    beside them at their own budget (:func:`with_other_tasks`). runs.csv, runs.json and curves.csv keep the runs of
    ``output_dir`` alone.
    """
    output_dir = Path(output_dir)
    runs = load_runs(output_dir)
    if not runs:
        raise ValueError(f"no finished runs under {output_dir / 'runs'}")
    table, curves = runs_table(runs), curves_table(runs)
    newer = [run for folder in entries or [] for run in load_runs(folder)]
    current, current_curves, replaced = with_newer_entries(table, curves, newer)
    others = [run for folder in tasks or [] for run in load_runs(folder)]
    current, current_curves = with_other_tasks(current, current_curves, others)
    reported, reported_curves, choices = with_baseline_variants(current, current_curves, load_variant_runs(alternatives or []))
    table.to_csv(output_dir / "runs.csv", index=False)
    curves.to_csv(output_dir / "curves.csv", index=False)
    (output_dir / "runs.json").write_text(json.dumps(runs, indent=1))
    summary = markdown_summary(current, command, reported, choices, reported_curves, replaced)
    (output_dir / "summary.md").write_text(summary)
    plot_learning_curves(reported_curves, output_dir / "learning_curves.png")
    if current_curves["seconds"].notna().any():  # the variants' files record no seconds, the benchmark's runs do
        plot_learning_curves(current_curves, output_dir / "learning_curves_time.png", x="seconds")
    plot_performance_profiles(reported, output_dir / "performance_profile.png")
    if speeds_comparable(current):
        plot_speed_ratios(current, output_dir / "speed_ratios.png")
    return reported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sb3_trpo_ext.benchmark.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", required=True, help="the benchmark's output folder (its runs/ are read)")
    parser.add_argument(
        "--alternatives",
        nargs="+",
        default=[],
        metavar="FILE",
        help="entry_variants results (JSON lines) of a baseline, reported instead of its runs where they do better",
    )
    parser.add_argument(
        "--entries",
        nargs="+",
        default=[],
        metavar="FOLDER",
        help="benchmark folders of this TRPO's entries frozen later: their runs replace the earlier entry's of the task",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=[],
        metavar="FOLDER",
        help="benchmark folders of tasks the output folder has no runs of, reported beside them at their own budget",
    )
    args = parser.parse_args(argv)
    for path in args.alternatives:
        if not Path(path).is_file():
            parser.error(f"--alternatives: no file {path}")
    for flag, paths in (("--entries", args.entries), ("--tasks", args.tasks)):
        for path in paths:
            if not any(Path(path, "runs").glob("*.json")):
                parser.error(f"{flag}: no finished runs under {Path(path, 'runs')} (a benchmark folder's run files)")
    command = shlex.join(["python", "-m", "sb3_trpo_ext.benchmark.report", *(sys.argv[1:] if argv is None else argv)])
    made_by = Path(args.output, "command.txt")  # the benchmark's command that made the runs, where it wrote one
    made = made_by.read_text() if made_by.exists() else ""
    try:
        write_report(args.output, made + command, args.alternatives, args.entries, args.tasks)
    except ValueError as error:  # runs that do not make one report: one line naming them, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"report written to {args.output}/summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
