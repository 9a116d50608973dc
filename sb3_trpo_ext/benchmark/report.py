"""
Results of a benchmark: CSV and JSON of every run, a Markdown table (mean ± sample std over seeds, ratios to sb3-contrib's
TRPO), learning curves and a bar chart of speed ratios.
"""

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sb3_trpo_ext.benchmark.settings import ALGORITHMS, REFERENCE

#: rl-baselines3-zoo's published sb3-contrib TRPO results (benchmark.md of rl-baselines3-zoo: one run each, 1M steps,
#: the -v3 versions of these tasks): the budget they were measured at and the return, by the -v5 task compared here.
PUBLISHED_BUDGET = 1_000_000
PUBLISHED = {"HalfCheetah-v5": 1785, "Hopper-v5": 3618, "Walker2d-v5": 4933, "Ant-v5": 4982, "Swimmer-v5": 366}

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


def runs_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: the scalar measurements, the fraction of the env-only rate, and the mean train/ logs."""
    rows = []
    for run in runs:
        row = {key: run[key] for key in SCALARS}
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


def aggregate_lines(table: pd.DataFrame, reps: int = 2000, seed: int = 0) -> list[str]:
    """
    Markdown rows of rliable's estimates over the final returns: per task, each algorithm's interquartile mean with a
    95% stratified-bootstrap confidence interval; over all tasks, the probability that an algorithm's run beats one of
    sb3-contrib's TRPO (on the seeds every task has for both).
    """
    from rliable import library as rly
    from rliable import metrics

    algos = [algo for algo in ALGORITHMS if algo in set(table["algo"])]

    def interval(scores: dict[str, Any], function: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        # rliable's independent-samples bootstrap (the probability of improvement's) draws from numpy's global
        # generator, whatever random_state says: seed that too, and give it back as it was.
        global_state = np.random.get_state()
        np.random.seed(seed)
        try:
            with warnings.catch_warnings():
                # rliable seeds arch's bootstrap the way arch now deprecates; the estimates are the same.
                warnings.filterwarnings("ignore", category=FutureWarning, module="arch")
                return rly.get_interval_estimates(scores, function, reps=reps, random_state=np.random.RandomState(seed))
        finally:
            np.random.set_state(global_state)

    def iqm(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(scores)])

    lines = [
        "| task | " + " | ".join(f"{ALGORITHMS[algo]} IQM [95% CI]" for algo in algos) + " |",
        "|---|" + "---|" * len(algos),
    ]
    for env_id, runs in table.groupby("env_id", sort=False):
        cells = []
        for algo in algos:
            scores = runs.loc[runs["algo"] == algo, "final_return"].to_numpy(dtype=float)[:, None]
            if len(scores) == 0:
                cells.append("–")
                continue
            point, ci = interval({algo: scores}, iqm)
            cells.append(f"{point[algo][0]:.1f} [{ci[algo][0][0]:.1f}, {ci[algo][1][0]:.1f}] (n={len(scores)})")
        lines.append(f"| {env_id} | " + " | ".join(cells) + " |")
    if REFERENCE in algos:
        pairs = {}
        envs = list(dict.fromkeys(table["env_id"]))
        for algo in [algo for algo in algos if algo != REFERENCE]:
            seeds = sorted(
                set.intersection(
                    *(
                        set(table.loc[(table["env_id"] == env) & (table["algo"] == name), "seed"])
                        for env in envs
                        for name in (algo, REFERENCE)
                    )
                )
            )
            if not seeds:
                continue

            def matrix(name: str, seeds: list[int] = seeds) -> np.ndarray:
                rows = table[(table["algo"] == name) & table["seed"].isin(seeds)]
                return rows.pivot(index="seed", columns="env_id", values="final_return")[envs].to_numpy(dtype=float)

            pairs[algo] = (matrix(algo), matrix(REFERENCE), len(seeds))
        if pairs:
            point, ci = interval({algo: [x, y] for algo, (x, y, _) in pairs.items()}, metrics.probability_of_improvement)
            explained = (
                f"Probability of improvement over {ALGORITHMS[REFERENCE]} over these {len(envs)} tasks "
                "(P(a run of the algorithm beats one of the reference), averaged over tasks; 95% CI):"
            )
            lines += ["", explained, ""]
            for algo, (_, _, n) in pairs.items():
                low, high = np.ravel(ci[algo])
                lines.append(
                    f"- {ALGORITHMS[algo]}: {float(np.ravel(point[algo])[0]):.2f} [{low:.2f}, {high:.2f}] "
                    f"(seeds common to all tasks: {n})"
                )
    return lines


def returns_lines(table: pd.DataFrame) -> list[str]:
    """
    Markdown rows of the final returns: per task and algorithm, mean ± sample std over seeds with each seed's value,
    and rl-zoo's published sb3-contrib TRPO return where the runs have its budget.
    """
    algos = [algo for algo in ALGORITHMS if algo in set(table["algo"])]
    lines = [
        "| task | steps | " + " | ".join(ALGORITHMS[algo] for algo in algos) + " | published sb3-contrib TRPO |",
        "|---|---|" + "---|" * (len(algos) + 1),
    ]
    for env_id, runs in table.groupby("env_id", sort=False):
        budgets = set(runs["n_timesteps"])
        cells = []
        for algo in algos:
            group = runs[runs["algo"] == algo].sort_values("seed")
            seeds = ", ".join(f"{value:.1f}" for value in group["final_return"])
            if group.empty:
                cells.append("–")
            elif len(group) == 1:  # no spread to show, and the one seed need not be seed 0
                cells.append(f"{group['final_return'].iloc[0]:.1f} (seed {group['seed'].iloc[0]} only)")
            else:
                cells.append(f"{_mean_std(group['final_return'], 1)} ({seeds})")
        published = PUBLISHED.get(str(env_id)) if budgets == {PUBLISHED_BUDGET} else None
        budget = "/".join(f"{int(steps):,}" for steps in sorted(budgets))
        lines.append(f"| {env_id} | {budget} | " + " | ".join(cells) + f" | {published or '–'} |")
    return lines


def _mean_std(values: pd.Series, digits: int) -> str:
    if values.isna().all():
        return "–"
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {std:.{digits}f}"


def _ratio(value: float, reference: float | None) -> str:
    if reference is None or not np.isfinite(reference) or reference == 0:
        return "–"
    return f"{value / reference:.2f}×"


def markdown_summary(table: pd.DataFrame, command: str = "") -> str:
    """Per environment: final return, speed and its ratio to sb3-contrib's TRPO, each as mean ± std over seeds."""
    lines = [f"Command: `{command}`", ""] if command else []
    header = (
        "| algorithm | seeds | steps | final return | train() ms/update | train() time vs sb3-contrib | steps/s "
        "| steps/s vs sb3-contrib | of env-only rate | Fisher products/update | peak MiB |"
    )
    for env_id, runs in table.groupby("env_id", sort=False):
        means = runs.groupby("algo")[["train_ms_per_update", "steps_per_second"]].mean()
        reference = means.loc[REFERENCE] if REFERENCE in means.index else {key: None for key in means.columns}
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
    lines += ["### Final returns", "", "Mean ± sample std over seeds (each seed's value, seeds in order):", ""]
    lines += [*returns_lines(table), "", "### Aggregate (rliable)", "", *aggregate_lines(table), ""]
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


def write_report(output_dir: str | Path, command: str = "") -> pd.DataFrame:
    """
    Write runs.csv, runs.json, curves.csv, summary.md, learning_curves.png (and learning_curves_time.png, against
    seconds of learning) and speed_ratios.png.
    """
    output_dir = Path(output_dir)
    runs = load_runs(output_dir)
    if not runs:
        raise ValueError(f"no finished runs under {output_dir / 'runs'}")
    table = runs_table(runs)
    curves = curves_table(runs)
    table.to_csv(output_dir / "runs.csv", index=False)
    curves.to_csv(output_dir / "curves.csv", index=False)
    (output_dir / "runs.json").write_text(json.dumps(runs, indent=1))
    (output_dir / "summary.md").write_text(markdown_summary(table, command))
    plot_learning_curves(curves, output_dir / "learning_curves.png")
    if curves["seconds"].notna().any():
        plot_learning_curves(curves, output_dir / "learning_curves_time.png", x="seconds")
    plot_speed_ratios(table, output_dir / "speed_ratios.png")
    return table
