"""The benchmark: what each algorithm is given, what a run measures, and a --quick smoke run of the whole command."""

import copy
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import behaviour as behaviour_module
import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import LinearSchedule
from torch import nn

import sb3_trpo_ext
import sb3_trpo_ext.critic
from sb3_trpo_ext.benchmark import provenance as provenance_module
from sb3_trpo_ext.benchmark.cli import DEFAULT_ENVS, main, parse_args, run_specs, stale
from sb3_trpo_ext.benchmark.provenance import code_fingerprint, fingerprint, harness_fingerprint
from sb3_trpo_ext.benchmark.report import (
    aggregate_lines,
    learning_curves_figure,
    markdown_summary,
    returns_lines,
    time_to_return_lines,
)
from sb3_trpo_ext.benchmark.run import RunSpec, execute
from sb3_trpo_ext.benchmark.settings import constant_trust_region, run_settings, settings_for, settings_record, zoo_entry
from sb3_trpo_ext.fisher import kl_averaged_dimensions
from sb3_trpo_ext.zoo import ALGO, config_path


def test_zoo_entry_falls_back_to_the_newest_version_of_the_same_task():
    assert zoo_entry("trpo", "HalfCheetah-v5")[0] == "HalfCheetah-v4"  # rl_zoo3 still names MuJoCo tasks -v4
    assert zoo_entry("trpo_ext", "HalfCheetah-v5")[0] == "HalfCheetah-v5"
    assert zoo_entry("ppo", "NoSuchTask-v3")[0] == "default"


def test_zoo_entries_are_read_as_rl_zoo3_reads_them():
    settings = run_settings("HalfCheetah-v4", zoo_entry("ppo", "HalfCheetah-v5")[1], "ppo")
    assert settings.n_envs == 1 and settings.normalize_kwargs == {"gamma": 0.98}
    assert settings.hyperparameters["policy_kwargs"]["activation_fn"] is nn.ReLU
    schedule = run_settings("CartPole-v1", zoo_entry("ppo", "CartPole-v1")[1], "ppo").hyperparameters["learning_rate"]
    assert isinstance(schedule, LinearSchedule)
    assert schedule(1.0) == pytest.approx(1e-3) and schedule(0.5) == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="frame_stack"):
        run_settings("X", {"policy": "CnnPolicy", "frame_stack": 4}, "ppo")


def entry_comment(env_id: str) -> str:
    """The comment above this TRPO's zoo entry for ``env_id``: how the entry was found and what it measured."""
    lines = config_path().read_text().splitlines()
    start = end = lines.index(f"{env_id}:")
    while lines[start - 1].startswith("#"):
        start -= 1
    return " ".join(lines[start:end])


#: The tasks whose entry's trust region is a number, which sb3-contrib's TRPO can be given.
FIXED_TRUST_REGION_ENVS = [env for env in DEFAULT_ENVS if not isinstance(zoo_entry("trpo_ext", env)[1].get("target_kl"), str)]


@pytest.mark.parametrize("env_id", FIXED_TRUST_REGION_ENVS)
def test_same_settings_give_sb3_contrib_the_same_true_trust_region(env_id):
    # --same-settings gives sb3-contrib this package's entry with target_kl and cg_damping divided by the KL terms it
    # averages over. The entries taken from sb3-contrib's zoo had multiplied them: sb3-contrib then gets exactly its
    # own tuned settings again (not so for CartPole's entry, this TRPO's defaults, nor for the entries of a study).
    own = settings_for("trpo", env_id)
    same = settings_for("trpo", env_id, same_settings=True)
    ours = settings_for("trpo_ext", env_id, same_settings=True)
    dimensions = kl_averaged_dimensions(gym.make(env_id).action_space)
    for key, default in (("target_kl", 0.01), ("cg_damping", 0.1)):
        assert ours.hyperparameters.get(key, default) == pytest.approx(same.hyperparameters[key] * dimensions)
    if "Untuned: sb3-contrib's settings" not in entry_comment(env_id):
        return
    for key, default in (("target_kl", 0.01), ("cg_damping", 0.1)):
        assert same.hyperparameters.pop(key) == pytest.approx(own.hyperparameters.pop(key, default))
    assert same.hyperparameters == own.hyperparameters
    assert (same.n_envs, same.normalize_kwargs) == (own.n_envs, own.normalize_kwargs)


def test_same_settings_give_both_trpos_a_constant_for_a_scheduled_trust_region():
    # Hopper-v5's entry takes target_kl "lin_0.045", which sb3-contrib's TRPO cannot: both get its mean, 0.0225.
    assert callable(settings_for("trpo_ext", "Hopper-v5").hyperparameters["target_kl"])
    ours = settings_for("trpo_ext", "Hopper-v5", same_settings=True).hyperparameters
    theirs = settings_for("trpo", "Hopper-v5", same_settings=True).hyperparameters
    dimensions = kl_averaged_dimensions(gym.make("Hopper-v5").action_space)
    assert ours["target_kl"] == pytest.approx(0.0225) and theirs["target_kl"] == pytest.approx(0.0225 / dimensions)
    with pytest.raises(ValueError, match=r"target_kl schedule 'exp_0.1' in --same-settings on Hopper-v5: only 'lin_"):
        constant_trust_region("exp_0.1", "Hopper-v5")


@pytest.mark.parametrize("algo", ["ppo", "npg_ext", "recurrent_trpo_ext", "ppo_lstm"])
def test_same_settings_leave_every_other_algorithm_its_own_entry(algo):
    # Only the two TRPOs share an entry; NPG or the recurrent pair must not be handed TRPO's feed-forward one.
    env_id = "PendulumNoVel-v1" if algo in ("recurrent_trpo_ext", "ppo_lstm") else "Pendulum-v1"
    assert settings_for(algo, env_id, same_settings=True) == settings_for(algo, env_id)


def test_runs_are_interleaved_seed_by_seed_and_algorithm_by_algorithm():
    specs = run_specs(parse_args(["--envs", "CartPole-v1", "Pendulum-v1", "--seeds", "0", "1", "-n", "1000"]))
    assert [(s.seed, s.env_id, s.algo) for s in specs[:4]] == [
        (0, "CartPole-v1", "trpo_ext"),
        (0, "CartPole-v1", "trpo"),
        (0, "CartPole-v1", "ppo"),
        (0, "Pendulum-v1", "trpo_ext"),
    ]
    assert len(specs) == 12 and {s.n_timesteps for s in specs} == {1000}


def test_a_run_counts_fisher_products_and_splits_its_time():
    spec = RunSpec("CartPole-v1", "trpo", seed=0, n_timesteps=4096, eval_freq=2048, n_eval_episodes=2, env_rate_steps=200)
    run = execute(spec)
    # sb3-contrib's CG: one product for the residual of its random start, one per iteration, one for the step size:
    # at most cg_max_steps (15) + 2.
    assert 1 < run["fisher_products_per_update"] <= 17
    ours = execute(RunSpec("CartPole-v1", "trpo_ext", 0, 4096, 2048, 2, 200))
    assert ours["fisher_products_per_update"] == pytest.approx(ours["train_log_means"]["train/cg_iterations"])
    for record in (run, ours):
        settings = settings_for(record["algo"], "CartPole-v1")
        rollout = settings.n_envs * settings.hyperparameters["n_steps"]
        assert record["n_updates"] == 4096 // rollout and record["curve_steps"][0] == 0
        assert record["curve_steps"][-1] == record["timesteps_done"] == 4096
        measured = record["rollout_seconds"] + record["train_seconds"]
        assert 0 < measured <= record["wall_seconds"] - record["eval_seconds"] + 1e-6
        assert record["steps_per_second"] > 0 and record["env_only_steps_per_second"] > record["steps_per_second"]


def test_quick_benchmark_writes_every_result(tmp_path, capsys):
    assert main(["--quick", "--envs", "CartPole-v1", "--jobs", "2", "--output", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "runs.csv")
    assert sorted(table["algo"]) == ["ppo", "trpo", "trpo_ext"]
    assert (table["timesteps_done"] >= 10_000).all()
    # The final return is the last evaluation of each run's curve, as the run file records it.
    runs = {run["algo"]: run for run in json.loads((tmp_path / "runs.json").read_text())}
    for algo, final_return in zip(table["algo"], table["final_return"], strict=True):
        assert final_return == pytest.approx(runs[algo]["curve_returns"][-1]) and len(runs[algo]["curve_returns"]) >= 2
    assert (table.loc[table["algo"] != "ppo", "fisher_products_per_update"] > 0).all()
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert set(curves.groupby("algo")["step"].max()) == set(table["timesteps_done"])
    assert len(json.loads((tmp_path / "runs.json").read_text())) == 3
    summary = (tmp_path / "summary.md").read_text()
    assert all(label in summary for label in ("sb3-trpo-ext TRPO", "sb3-contrib TRPO", "SB3 PPO"))
    # Each algorithm with its own settings: speeds are listed, never compared.
    assert "listed, not compared" in summary and "×" not in summary and not (tmp_path / "speed_ratios.png").exists()
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
    assert (tmp_path / "learning_curves_time.png").stat().st_size > 10_000
    assert "### Aggregate (rliable)" in summary and "No task with a published" in summary  # CartPole has none

    # The same command again reuses the finished runs.
    capsys.readouterr()
    assert main(["--quick", "--envs", "CartPole-v1", "--output", str(tmp_path)]) == 0
    assert "3 already in" in capsys.readouterr().out

    # The report alone, rewritten from the run files with a baseline's variant that does better: nothing runs again.
    from sb3_trpo_ext.benchmark import report

    ppo = runs["ppo"]
    line = dict(env="CartPole-v1", algo="ppo", variant="n_epochs=1", seed=0, n_timesteps=ppo["n_timesteps"],
                final_return=ppo["final_return"] + 1, curve_steps=[0], curve_returns=[0.0])  # fmt: skip
    (tmp_path / "ppo.jsonl").write_text(json.dumps(line) + "\n")
    assert report.main(["--output", str(tmp_path), "--alternatives", str(tmp_path / "ppo.jsonl")]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "Command: `python -m sb3_trpo_ext.benchmark --quick --envs CartPole-v1 --output" in summary
    assert f"`, then `python -m sb3_trpo_ext.benchmark.report --output {tmp_path} --alternatives" in summary
    assert "- CartPole-v1, SB3 PPO: `n_epochs=1`" in summary and summary.count("reported: the variant") == 1
    assert pd.read_csv(tmp_path / "runs.csv").equals(table)  # the runs made here, as they are
    with pytest.raises(SystemExit):
        report.main(["--output", str(tmp_path), "--alternatives", str(tmp_path / "missing.jsonl")])


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        parse_args(["--jobs", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--algos", "sac"])


def test_steps_per_second_leave_out_every_evaluation_the_last_one_too(monkeypatch):
    # 2500 steps with evaluations every 2000: the last one comes after learn() returns.
    import sb3_trpo_ext.benchmark.run as run_module

    def slow_evaluation(*args, **kwargs):
        time.sleep(0.3)
        return evaluate_policy(*args, **kwargs)

    monkeypatch.setattr(run_module, "evaluate_policy", slow_evaluation)
    record = execute(RunSpec("CartPole-v1", "trpo_ext", 0, 2500, 2000, 1, 200))
    assert record["curve_steps"][-1] == record["timesteps_done"] >= 2500
    assert record["curve_steps"][-2] < record["timesteps_done"]  # so the last evaluation ran after learn()
    assert record["eval_seconds"] >= len(record["curve_steps"]) * 0.3
    learning = record["wall_seconds"] - record["eval_seconds"]
    assert learning >= record["rollout_seconds"] + record["train_seconds"]
    assert record["steps_per_second"] == pytest.approx(record["timesteps_done"] / learning)
    # Learning time at each evaluation: starts at 0, grows, ends at the run's learning time.
    assert record["curve_seconds"][0] == pytest.approx(0, abs=0.05)
    assert record["curve_seconds"] == sorted(record["curve_seconds"])
    assert record["curve_seconds"][-1] == pytest.approx(learning, abs=0.05)


def test_finished_runs_are_reused_only_with_the_same_settings_versions_and_code(tmp_path, monkeypatch):
    import sb3_trpo_ext.benchmark.cli as main_module

    spec = RunSpec("CartPole-v1", "trpo_ext", 0, 1024, 1024, 1, 100)
    assert stale(spec, tmp_path) == "not run yet"
    execute(spec, str(tmp_path))
    assert stale(spec, tmp_path) is None
    path = tmp_path / "runs" / f"{spec.name}.json"
    record = json.loads(path.read_text())
    assert (
        record["provenance"]["versions"]["torch"] == torch.__version__.split("+")[0]
        or record["provenance"]["versions"]["torch"] == torch.__version__
    )
    assert record["provenance"]["code"] == code_fingerprint()
    # What else decides a run, for every algorithm: the harness, rl_zoo3's version, the machine and the threads.
    assert record["provenance"]["harness"] == harness_fingerprint(Path(sb3_trpo_ext.__file__).parent)
    assert record["provenance"]["versions"]["rl_zoo3"] is not None
    assert record["provenance"]["cpu"] and record["provenance"]["cpu_count"] >= 1
    assert record["provenance"]["torch_threads"] == 1

    def tampered(change):
        edited = copy.deepcopy(record)
        change(edited)
        path.write_text(json.dumps(edited))
        return stale(spec, tmp_path)

    assert "hyperparameters" in tampered(lambda r: r["hyperparameters"].update(target_kl="0.5"))
    assert "n_eval_episodes" in tampered(lambda r: r.update(n_eval_episodes=7))
    assert "torch 0.1 -> " in tampered(lambda r: r["provenance"]["versions"].update(torch="0.1"))
    assert "algorithm's code" in tampered(lambda r: r["provenance"].update(code="0" * 16))
    assert "records no versions" in tampered(lambda r: r.pop("provenance"))
    assert "the harness 0000000000000000 -> " in tampered(lambda r: r["provenance"].update(harness="0" * 16))
    assert "cpu Another CPU -> " in tampered(lambda r: r["provenance"].update(cpu="Another CPU"))
    assert "python 3.0.0 -> " in tampered(lambda r: r["provenance"].update(python="3.0.0"))
    assert "torch_threads 4 -> 1" in tampered(lambda r: r["provenance"].update(torch_threads=4))
    # The instruction set is recorded, not matched: a reporting seed is run once, on whichever machine of its model.
    assert record["provenance"]["cpu_flags"] is not None
    assert tampered(lambda r: r["provenance"].update(cpu_flags="0" * 16)) is None
    # Other sources are the same run when the table of harness digests says both compute the same numbers.
    table = tmp_path / "harness-digests.json"
    monkeypatch.setattr(provenance_module, "HARNESS_DIGESTS", table)
    current = record["provenance"]
    entry = dict(algo="trpo_ext", code=current["code"], harness=current["harness"], digest="d" * 16)
    table.write_text(json.dumps([entry, {**entry, "code": "0" * 16}]))
    assert tampered(lambda r: r["provenance"].update(code="0" * 16)) is None
    table.write_text(json.dumps([entry, {**entry, "code": "0" * 16, "digest": "e" * 16}]))
    assert "algorithm's code" in tampered(lambda r: r["provenance"].update(code="0" * 16))
    table.write_text(json.dumps([entry, {**entry, "code": "0" * 16, "algo": "ppo"}]))
    assert "algorithm's code" in tampered(lambda r: r["provenance"].update(code="0" * 16))
    # Digests compare on one instruction set; a row recorded without one stands for any.
    here, there = {**entry, "cpu_flags": "f" * 16}, {**entry, "code": "0" * 16, "cpu_flags": "a" * 16}
    table.write_text(json.dumps([here, there]))
    assert "algorithm's code" in tampered(lambda r: r["provenance"].update(code="0" * 16))
    table.write_text(json.dumps([here, there, {**there, "cpu_flags": "f" * 16}]))
    assert tampered(lambda r: r["provenance"].update(code="0" * 16)) is None
    table.write_text(json.dumps([here, {**there, "cpu_flags": None}]))
    assert tampered(lambda r: r["provenance"].update(code="0" * 16)) is None
    table.write_text(json.dumps([here, {**there, "cpu_flags": "f" * 16, "digest": "e" * 16}, {**there, "cpu_flags": None}]))
    assert "algorithm's code" in tampered(lambda r: r["provenance"].update(code="0" * 16))
    # Only this package's TRPO depends on this package's code.
    monkeypatch.setattr(main_module, "provenance", lambda algo, threads: {**record["provenance"], "code": "1" * 16})
    assert "algorithm's code" in tampered(lambda r: None)


def test_a_run_at_equal_settings_is_current_only_under_the_same_harness(tmp_path, monkeypatch):
    # A baseline at equal settings runs this TRPO's entries; its own harness digest says nothing of them.
    table = tmp_path / "harness-digests.json"
    monkeypatch.setattr(provenance_module, "HARNESS_DIGESTS", table)
    current = provenance_module.provenance("trpo")
    recorded = {**current, "harness": "0" * 16}
    row = dict(algo="trpo", code=None, harness=current["harness"], digest="d" * 16)
    table.write_text(json.dumps([row, {**row, "harness": "0" * 16}]))
    assert provenance_module.reproduces(recorded, current, "trpo") is None
    assert "the harness 0000000000000000 -> " in provenance_module.reproduces(recorded, current, "trpo", by_digest=False)
    spec = RunSpec("CartPole-v1", "trpo", 0, 1024, 1024, 1, 100, same_settings=True)
    settings = settings_record(settings_for("trpo", "CartPole-v1", True))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / f"{spec.name}.json").write_text(json.dumps({**asdict(spec), **settings, "provenance": recorded}))
    assert "the harness 0000000000000000 -> " in stale(spec, tmp_path)
    (tmp_path / "runs" / f"{spec.name}.json").write_text(json.dumps({**asdict(spec), **settings, "provenance": current}))
    assert stale(spec, tmp_path) is None


def _changed_rules():
    import sb3_trpo_ext.natural_gradient as core
    from sb3_trpo_ext.benchmark import settings
    from sb3_trpo_ext.fast_paths import FastPaths

    return {
        "the step size": (core, "max_step_size", lambda f: lambda *args: 0.9 * f(*args)),
        "the advantages' normalisation": (core, "normalize_advantages", lambda f: lambda advantages: advantages),
        "conjugate gradient": (core, "conjugate_gradient", lambda f: lambda m, b, steps, *rest: f(m, b, 2, *rest)),
        "the critic's fit": (FastPaths, "fit_critic", lambda f: lambda *args: None),
        "an entry's hyperparameter": (
            settings,
            "zoo_hyperparameters",
            lambda f: lambda *args: {**f(*args), "gae_lambda": 0.9},
        ),
    }


@pytest.mark.parametrize("rule", [None, "the step size", "the advantages' normalisation", "conjugate gradient",
                                  "the critic's fit", "an entry's hyperparameter"])  # fmt: skip
def test_the_harness_digest_changes_when_an_update_rule_or_the_harness_does(rule, monkeypatch):
    tasks = ("Pendulum-v1",)
    reference = behaviour_module.harness_digest("trpo_ext", tasks, updates=1)
    if rule is not None:
        owner, name, change = _changed_rules()[rule]
        monkeypatch.setattr(owner, name, change(getattr(owner, name)))
    # The same code gives the same digest (a refactor that changes no number keeps the runs); any change, another.
    assert (behaviour_module.harness_digest("trpo_ext", tasks, updates=1) == reference) == (rule is None)


def test_the_code_fingerprint_ignores_comments_docstrings_and_layout(tmp_path):
    (tmp_path / "core.py").write_text('"""Doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 1  # why\n')
    before = fingerprint(tmp_path)
    (tmp_path / "core.py").write_text('"""Other doc."""\ndef f(x):\n    # a comment\n    return (x +\n            1)\n')
    assert fingerprint(tmp_path) == before
    (tmp_path / "core.py").write_text("def f(x):\n    return x + 2\n")
    assert fingerprint(tmp_path) != before


def test_the_code_fingerprint_leaves_out_what_no_benchmark_run_executes(tmp_path):
    for module in ("trpo.py", "ray_vec_env.py", "benchmark/run.py", "zoo/cli.py"):
        (tmp_path / module).parent.mkdir(exist_ok=True)
        (tmp_path / module).write_text("x = 1\n")
    before = fingerprint(tmp_path)
    for module in ("ray_vec_env.py", "benchmark/run.py", "zoo/cli.py"):
        (tmp_path / module).write_text("x = 2\n")
    assert fingerprint(tmp_path) == before
    (tmp_path / "trpo.py").write_text("x = 2\n")
    assert fingerprint(tmp_path) != before


def test_the_harness_fingerprint_covers_how_runs_are_built_and_evaluated_and_the_zoo_entries(tmp_path):
    for name in ("benchmark/run.py", "benchmark/settings.py", "benchmark/report.py", "zoo/__init__.py", "zoo/cli.py",
                 "zoo/values.py", "zoo/trpo_ext.yml", "trpo.py"):  # fmt: skip
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    before = harness_fingerprint(tmp_path)
    for name in ("benchmark/report.py", "zoo/cli.py", "trpo.py"):
        (tmp_path / name).write_text("x = 2\n")
    assert harness_fingerprint(tmp_path) == before
    for name in ("benchmark/run.py", "benchmark/settings.py", "zoo/__init__.py", "zoo/values.py", "zoo/trpo_ext.yml"):
        (tmp_path / name).write_text("x = 3\n")
        assert harness_fingerprint(tmp_path) != before, name
        (tmp_path / name).write_text("x = 1\n")


def test_the_harness_fingerprint_reads_a_zoo_file_as_its_entries_not_its_comments(tmp_path):
    entry = tmp_path / "zoo" / "trpo_ext.yml"
    entry.parent.mkdir()
    entry.write_text("# How it was found.\nHopper-v5:\n  n_envs: 2\n  target_kl: 0.03\n")
    before = harness_fingerprint(tmp_path)
    entry.write_text("# Found otherwise, and said at length.\nHopper-v5:\n    n_envs: 2   # two\n    target_kl: 3.0e-2\n")
    assert harness_fingerprint(tmp_path) == before
    entry.write_text("Hopper-v5:\n  n_envs: 2\n  target_kl: 0.04\n")
    assert harness_fingerprint(tmp_path) != before


def test_the_summary_reports_the_sample_standard_deviation():
    runs = pd.DataFrame(
        [
            dict(
                env_id="E-v0",
                algo=algo,
                seed=seed,
                n_timesteps=10,
                timesteps_done=10,
                final_return=value,
                train_ms_per_update=1.0,
                steps_per_second=1.0,
                fraction_of_env_rate=0.5,
                fisher_products_per_update=1.0,
                peak_memory_mib=1.0,
            )
            for algo in ("trpo_ext", "trpo")
            for seed, value in enumerate((1.0, 3.0))
        ]
    )
    assert "| 2.0 ± 1.4 |" in markdown_summary(runs)  # sqrt(2): ddof=1; ddof=0 would give 1.0
    assert "listed, not compared" in markdown_summary(runs) and "×" not in markdown_summary(runs)  # nothing recorded
    # The same settings for both TRPOs, on one recorded CPU: then the speeds compare, as ratios to sb3-contrib's.
    comparable = runs.assign(same_settings=True, cpu="AMD EPYC", steps_per_second=[2.0, 2.0, 1.0, 1.0], rollout_seconds=1.0)
    assert "| 2.00× |" in markdown_summary(comparable) and "listed, not compared" not in markdown_summary(comparable)
    assert "×" not in markdown_summary(comparable.assign(cpu=["A", "B", "A", "B"]))  # two machines


def test_the_final_returns_table_gives_each_seed_and_the_published_return_at_its_budget():
    def runs(budget):
        return pd.DataFrame(
            [
                dict(env_id=env_id, algo=algo, seed=seed, n_timesteps=budget, final_return=value)
                for env_id in ("Hopper-v5", "Pendulum-v1")
                for algo, values in (("trpo", (30.0, 10.0)), ("trpo_ext", (2.0, 1.0, 3.0)), ("ppo", (None, 7.0)))
                for seed, value in enumerate(values)
                if value is not None
            ]
        )

    lines = returns_lines(runs(1_000_000))
    assert lines[0] == (
        "| task | steps | sb3-trpo-ext TRPO | sb3-contrib TRPO | SB3 PPO | published sb3-contrib TRPO | published PPO |"
    )
    assert lines[2] == (
        "| Hopper-v5 | 1,000,000 | 2.0 [1.0, 3.0] (seeds 0-2: 2.0, 1.0, 3.0) | 20.0 [10.0, 30.0] (seeds 0-1: 30.0, 10.0) "
        "| 7.0 (seed 1 only) | 3618 | 2410 |"
    )
    assert lines[3].endswith("| – | – |")  # nothing published for Pendulum-v1
    assert returns_lines(runs(300_000))[2].endswith("(seed 1 only) | – | – |")  # published at 1M, not comparable at 300k


def test_learning_curves_name_every_algorithm_in_one_colour_each_across_panels():
    # The first task lacks PPO; another has it: PPO must still be in the legend, and keep its colour everywhere.
    curves = pd.DataFrame(
        [
            dict(env_id=env_id, algo=algo, seed=seed, step=step, seconds=float(step), mean_return=float(step + seed))
            for env_id, algos in (("A-v0", ("trpo_ext", "trpo")), ("B-v0", ("trpo_ext", "ppo")), ("C-v0", ("ppo",)))
            for algo in algos
            for seed in (0, 1)
            for step in (0, 10, 20)
        ]
    )
    figure = learning_curves_figure(curves)
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["sb3-trpo-ext TRPO", "sb3-contrib TRPO", "SB3 PPO"]
    colours = {(ax.get_title(), line.get_label()): line.get_color() for ax in figure.axes for line in ax.get_lines()}
    assert colours[("B-v0", "SB3 PPO")] == colours[("C-v0", "SB3 PPO")] != colours[("A-v0", "sb3-contrib TRPO")]


def test_the_rliable_aggregate_is_the_same_whatever_numpy_s_global_generator_holds():
    rng = np.random.default_rng(0)
    runs = pd.DataFrame(
        [
            dict(env_id=env_id, algo=algo, seed=seed, final_return=float(rng.normal()))
            for env_id in ("A-v0", "B-v0")
            for algo in ("trpo_ext", "trpo")
            for seed in range(3)
        ]
    )
    np.random.seed(1)
    first = aggregate_lines(runs, reps=200)
    np.random.seed(2)
    after = np.random.random()
    np.random.seed(2)
    assert aggregate_lines(runs, reps=200) == first
    assert np.random.random() == after  # and the caller's generator is left where it was


def test_the_summary_aggregates_normalised_scores_with_rliable():
    from sb3_trpo_ext.benchmark.report import PUBLISHED, normalized_scores

    # Scores as fractions of the published return: this TRPO 1.0-1.4 on seeds 10-14, sb3-contrib's 0-0.4 on 0-4.
    runs = pd.DataFrame(
        [
            dict(env_id=env_id, algo=algo, seed=seed + offset, final_return=PUBLISHED[env_id] * (base + 0.1 * seed))
            for env_id in ("Hopper-v5", "Walker2d-v5")
            for algo, base, offset in (("trpo_ext", 1.0, 10), ("trpo", 0.0, 0))
            for seed in range(5)
        ]
        + [dict(env_id="Pendulum-v1", algo="trpo", seed=0, final_return=-150.0)]  # nothing published: left out
    )
    scores = normalized_scores(runs)
    assert scores["trpo_ext"].shape == scores["trpo"].shape == (5, 2)
    np.testing.assert_allclose(scores["trpo_ext"][:, 0], [1.0, 1.1, 1.2, 1.3, 1.4])
    lines = "\n".join(aggregate_lines(runs, reps=200))
    # The IQM of 10 scores (scipy.stats.trim_mean, a quarter cut) drops the 2 lowest and 2 highest: 7.2 / 6 = 1.2.
    assert "| sb3-trpo-ext TRPO | 5 | 1.20 [" in lines and "| sb3-contrib TRPO | 5 | 0.20 [" in lines
    assert "over sb3-contrib TRPO: 1.00 [1.00, 1.00]; the data support that sb3-trpo-ext TRPO tends to beat" in lines
    reversed_runs = runs.assign(algo=runs["algo"].map({"trpo_ext": "trpo", "trpo": "trpo_ext"}))
    assert "over sb3-contrib TRPO: 0.00 [0.00, 0.00]" in "\n".join(aggregate_lines(reversed_runs, reps=200))
    pairs = zip(runs["env_id"], runs["seed"], strict=True)
    tied = runs.assign(final_return=[PUBLISHED.get(env, 1.0) * (seed % 5) for env, seed in pairs])
    assert "cannot tell which tends to win" in "\n".join(aggregate_lines(tied, reps=200))
    # Four runs a task, however far apart: an interval is printed, no verdict drawn from it.
    few = "\n".join(aggregate_lines(runs[runs["seed"] % 10 != 4], reps=200))
    assert "4 runs per task are too few for a bootstrap interval to be trusted: no verdict" in few
    assert "the data support" not in few


def test_an_entry_s_env_kwargs_make_its_environment():
    from sb3_trpo_ext.benchmark.run import make_env

    plain = run_settings("Ant-v5", {"n_envs": 1}, "trpo_ext")
    without_contacts = run_settings(
        "Ant-v5", {"n_envs": 1, "env_kwargs": "dict(include_cfrc_ext_in_observation=False)"}, "trpo_ext"
    )
    assert without_contacts.hyperparameters == {} and without_contacts.env_kwargs == {"include_cfrc_ext_in_observation": False}
    assert make_env(plain, "Ant-v5", 0).observation_space.shape == (105,)
    assert make_env(without_contacts, "Ant-v5", 0).observation_space.shape == (27,)
    # Runs recorded before entries could carry env_kwargs have none: they still match an entry without them.
    assert settings_record(plain)["env_kwargs"] is None


def test_a_checkout_is_dirty_for_code_changes_not_for_benchmark_results(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "pkg").mkdir()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "pkg" / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "run.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    commit = provenance_module.git_commit(tmp_path)
    assert commit is not None and not commit.endswith("-dirty")
    (tmp_path / "benchmarks" / "run.json").write_text('{"final_return": 1}\n')  # a run written by the benchmark
    assert provenance_module.git_commit(tmp_path) == commit
    (tmp_path / "pkg" / "code.py").write_text("x = 2\n")
    assert provenance_module.git_commit(tmp_path) == commit + "-dirty"


def test_behaviour_digests_are_reproducible_and_change_with_any_update_rule(monkeypatch):
    import behaviour

    run = behaviour.BehaviourRun("small", "trpo_ext", "CartPole-v1", 1024, dict(n_steps=512, batch_size=64))
    first = behaviour.digest(run)
    assert behaviour.digest(run) == first
    # NPG's whole step is the line search's first candidate, which TRPO takes here: the same update, the same digest.
    assert behaviour.digest(behaviour.BehaviourRun("npg", "npg_ext", "CartPole-v1", 1024, run.kwargs)) == first
    assert (
        behaviour.digest(behaviour.BehaviourRun("delta", "trpo_ext", "CartPole-v1", 1024, {**run.kwargs, "target_kl": 0.02}))
        != first
    )
    with monkeypatch.context() as patched:  # a line search that accepts only a larger improvement
        patched.setattr("sb3_trpo_ext.line_search.is_acceptable", lambda candidate, *args: candidate.mean_kl < 1e-4)
        assert behaviour.digest(run) != first
    with monkeypatch.context() as patched:  # a critic that fits one epoch fewer
        fit = sb3_trpo_ext.critic.fit_critic
        patched.setattr("sb3_trpo_ext.fast_paths.fit_critic", lambda p, c, b, n, *rest, **kw: fit(p, c, b, n - 1, *rest, **kw))
        assert behaviour.digest(run) != first
    names = [r.name for r in behaviour.RUNS]
    assert len(set(names)) == len(names) and {r.algo for r in behaviour.RUNS} == {
        "trpo_ext",
        "npg_ext",
        "maskable_trpo_ext",
        "recurrent_trpo_ext",
    }


def test_the_reported_mujoco_entries_are_frozen():
    # The entries the reporting runs are made with: the five of seeds 10-14 as at commit 9b26e22, since eaf2e8b Ant-v5
    # on the -v4 observation for its seeds 15-19, and Humanoid-v5's tuned entry. A change must be a new, stated protocol
    # (docs/benchmarks.md).
    import hashlib

    entries = yaml.safe_load(config_path(ALGO).read_text())
    tasks = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Swimmer-v5")

    def digest() -> str:
        return hashlib.sha256(json.dumps({task: entries[task] for task in tasks}, sort_keys=True).encode()).hexdigest()[:16]

    assert digest() == "9c0886095c323196"
    assert entries["Ant-v5"].pop("env_kwargs") == {"include_cfrc_ext_in_observation": False}
    assert digest() == "3a4e15ea88cd8259"  # nothing else changed since 9b26e22
    # Humanoid-v5's entry of its seeds 15-19 at 2M.
    humanoid = json.dumps(entries["Humanoid-v5"], sort_keys=True).encode()
    assert hashlib.sha256(humanoid).hexdigest()[:16] == "06f1bb505acccd28"


def test_the_tuning_budgets_in_the_docs_are_those_the_records_give():
    import budget

    docs = (Path(sb3_trpo_ext.__file__).parent.parent / "docs" / "benchmarks.md").read_text()
    table = budget.table()
    assert table in docs
    # The README's brief of each task adds up the table's row: trials, every run on seeds, the total steps.
    brief = budget.in_brief()
    for row in table.splitlines()[2:]:
        task, trials, _, short, long, _, development, _, total = (cell.strip() for cell in row.strip("|").split("|"))
        runs = int(short.split()[0]) + int(long.split()[0]) + int(development)
        assert brief[task] == f"{trials.split()[0]} trials, {runs} runs, {total} steps"


def test_the_readme_table_is_the_one_the_run_files_give():
    import budget

    from sb3_trpo_ext.benchmark.report import (
        curves_table,
        load_runs,
        load_variant_runs,
        readme_table,
        runs_table,
        times_to_return,
        with_baseline_variants,
        with_newer_entries,
        with_other_tasks,
    )

    root = Path(sb3_trpo_ext.__file__).parent.parent
    readme = (root / "README.md").read_text()
    # The command that made the table: its output folder, the baselines' variants and the later entries it was given.
    command = re.search(
        r"benchmark\.report --output (benchmarks/results/[\w-]+)(?:\s+--alternatives((?:\s+benchmarks/[\w/.-]+)+))?"
        r"(?:\s+--entries((?:\s+benchmarks/[\w/.-]+)+))?(?:\s+--tasks((?:\s+benchmarks/[\w/.-]+)+))?`",
        readme,
    )
    runs = load_runs(root / command.group(1))
    alternatives = [root / path for path in (command.group(2) or "").split()]
    newer = [run for folder in (command.group(3) or "").split() for run in load_runs(root / folder)]
    table, curves, replaced = with_newer_entries(runs_table(runs), curves_table(runs), newer)
    others = [run for folder in (command.group(4) or "").split() for run in load_runs(root / folder)]
    table, curves = with_other_tasks(table, curves, others)
    assert replaced and all(
        f"(seeds {seeds})" in readme for seeds in re.findall(r"newer entry .*?\(seeds ([\d-]+)\)", "".join(replaced))
    )
    table, curves, choices = with_baseline_variants(table, curves, load_variant_runs(alternatives))
    assert "\n".join(readme_table(table, budget.in_brief(), times_to_return(curves))) in readme
    # The aggregates it quotes are the report's, and the report was written from these same runs and choices.
    summary = (root / command.group(1) / "summary.md").read_text()
    assert "\n".join(returns_lines(table)) in summary and "\n".join(choices) in summary
    assert "\n".join(time_to_return_lines(curves)) in summary
    assert all(line in summary for line in replaced)
    docs = (root / "docs" / "benchmarks.md").read_text()
    assert "\n".join(choices) in docs and all(line in docs for line in replaced)
    paragraph = " ".join(readme[readme.index("On scores divided by the published") :].split("\n\n")[0].split())
    figures = re.findall(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]", paragraph)
    # Five of the report's, then the equal-settings one (checked by the test of those).
    assert len(figures) == 6 and all(figure in summary for figure in figures[:5]), figures
    # What it says the statistics support is the report's verdict on each probability of improvement, word for word.
    verdicts = re.findall(r"^- over [\w -]+: \d\.\d\d \[\d\.\d\d, \d\.\d\d\]; (.+)$", summary, re.MULTILINE)
    assert len(verdicts) == 2 and all(verdict in paragraph for verdict in verdicts), verdicts


def test_the_docs_humanoid_figures_and_what_they_say_are_the_readme_table_s():
    root = Path(sb3_trpo_ext.__file__).parent.parent
    readme = (root / "README.md").read_text()
    docs = (root / "docs" / "benchmarks.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| Humanoid-v5 (2M steps) |"))
    ours, theirs = (cell.strip() for cell in row.strip("|").split("|")[1:3])
    paragraph = " ".join(docs[docs.index("Humanoid-v5 runs at 2M steps") :].split("\n\n")[0].split())
    figures = re.findall(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", paragraph)
    assert len(figures) == 2 and ours.startswith(figures[0]) and theirs.startswith(figures[1]), (figures, row)
    mean, baseline = (float(figure.split()[0]) for figure in figures)
    assert ("This TRPO's mean passes 1000" in paragraph) == (mean >= 1000)
    assert ("sb3-contrib's TRPO leads" in paragraph) == (baseline > mean) == ("below sb3-contrib TRPO" in ours)
    # The baselines' seeds, where the row names them, are the paragraph's.
    seeds = re.search(r"\(seeds ([\d-]+)\)", theirs)
    assert seeds is None or f"(seeds {seeds.group(1)};" in paragraph


def test_the_equal_settings_results_in_the_docs_are_those_the_run_files_give():
    from sb3_trpo_ext.benchmark.report import load_runs, runs_table

    root = Path(sb3_trpo_ext.__file__).parent.parent
    docs = (root / "docs" / "benchmarks.md").read_text()
    start = docs.index("### Equal settings")
    section = docs[start : docs.index("\n### ", start)]  # up to the next heading
    table = runs_table(load_runs(root / "benchmarks" / "results" / "same-settings-300k"))
    assert "\n".join(returns_lines(table)) in section
    aggregate = aggregate_lines(table)
    start = aggregate.index("| algorithm | runs per task | IQM of normalised scores [95% CI] |")
    assert "\n".join(aggregate[start : aggregate.index("", start)]) in section
    improvement = [line for line in aggregate if line.startswith("- over")]
    assert len(improvement) == 1 and improvement[0] in section
    # The README, beside the tuned entries' verdict, quotes this one.
    readme = " ".join((root / "README.md").read_text().split())
    assert improvement[0].removeprefix("- over sb3-contrib TRPO: ") in readme


def test_walker2d_at_equal_settings_is_answered_from_fifteen_seeds_a_side():
    from sb3_trpo_ext.benchmark.report import load_runs, runs_table

    root = Path(sb3_trpo_ext.__file__).parent.parent
    folder = root / "benchmarks" / "results" / "same-settings-300k-walker2d"
    table = runs_table(load_runs(folder))
    seeds = {algo: sorted(table[table.algo == algo].seed) for algo in ("trpo_ext", "trpo")}
    assert seeds == {"trpo_ext": list(range(10, 25)), "trpo": list(range(10, 25))}
    # Seeds 10-14 are the equal-settings runs of same-settings-300k, made again: the same returns to every digit.
    earlier = runs_table(load_runs(root / "benchmarks" / "results" / "same-settings-300k"))
    for algo in seeds:
        for seed in range(10, 15):
            [again] = table[(table.algo == algo) & (table.seed == seed)].final_return
            [first] = earlier[(earlier.env_id == "Walker2d-v5") & (earlier.algo == algo) & (earlier.seed == seed)].final_return
            assert again == first
    [improvement] = [line for line in aggregate_lines(table) if line.startswith("- over sb3-contrib TRPO: ")]
    figure = improvement.removeprefix("- over sb3-contrib TRPO: ").split(";")[0]
    means = {algo: f"{table[table.algo == algo].final_return.mean():.1f}" for algo in seeds}
    docs = (root / "docs" / "benchmarks.md").read_text()
    start = docs.index("### Walker2d-v5 at equal settings")
    end = min(index for index in (docs.find("\n### ", start), docs.find("\n[^", start)) if index != -1)
    section = " ".join(docs[start:end].split())  # up to the next heading or the footnotes
    assert f"probability of improvement {figure}" in section
    assert f"{means['trpo_ext']} against {means['trpo']}" in section


def run_record(env_id, algo, seed, final_return, n_timesteps=1000):
    """A benchmark run file's record, as ``load_runs`` reads it."""
    return dict(env_id=env_id, algo=algo, label=algo, seed=seed, same_settings=False, entry={}, n_envs=1,
                normalize=False, n_timesteps=n_timesteps, timesteps_done=n_timesteps, final_return=final_return,
                wall_seconds=1.0, eval_seconds=0.1, rollout_seconds=0.5, train_seconds=0.5, n_updates=1,
                train_ms_per_update=1.0, steps_per_second=1.0, env_only_steps_per_second=2.0,
                fisher_products_per_update=1.0, peak_memory_mib=1.0, train_log_means={}, curve_steps=[0, n_timesteps],
                curve_seconds=[0.0, 1.0], curve_returns=[0.0, final_return])  # fmt: skip


def test_an_entry_frozen_later_replaces_the_earlier_entry_s_runs_of_its_task_whatever_they_show():
    from sb3_trpo_ext.benchmark.report import curves_table, readme_table, runs_table, with_newer_entries

    # Ant-v5 comes first in the folder, by this TRPO's runs: replacing them must not move the task to the end.
    tasks = ("Ant-v5", "Hopper-v5", "Swimmer-v5")
    earlier = [run_record(env, "trpo_ext", seed, 5000.0 + seed) for env in tasks for seed in (10, 11)]
    earlier += [run_record(env, "trpo", seed, 4000.0) for env in tasks[::-1] for seed in (0, 1)]
    newer = [run_record("Ant-v5", "trpo_ext", 15, 1000.0), run_record("Ant-v5", "trpo_ext", 16, 3000.0)]
    table, curves, lines = with_newer_entries(runs_table(earlier), curves_table(earlier), newer)
    ours = table[table.algo == "trpo_ext"]
    # Replaced though worse: a newer frozen entry is reported whatever it shows; the task keeps its place.
    assert list(ours[ours.env_id == "Ant-v5"].final_return) == [1000.0, 3000.0]
    assert list(ours[ours.env_id == "Hopper-v5"].final_return) == [5010.0, 5011.0]
    assert list(dict.fromkeys(table.env_id)) == list(tasks) and len(table) == len(earlier)
    ant_curves = curves[(curves.env_id == "Ant-v5") & (curves.algo == "trpo_ext")]
    assert sorted(set(ant_curves.seed)) == [15, 16] and ant_curves.seconds.notna().all()
    assert lines == [
        "- Ant-v5, sb3-trpo-ext TRPO: the newer entry 2000.0 [1000.0, 3000.0] (seeds 15-16) replaces the earlier "
        "5010.5 [5010.0, 5011.0] (seeds 10-11)"
    ]
    # The header names the seeds most tasks have; the task on others names its own, and says where it trails.
    rows = readme_table(table.assign(variant=""))
    assert "sb3-trpo-ext TRPO, seeds 10-11 |" in rows[0]
    assert rows[2].startswith("| Hopper-v5 | 5010.5 [5010.0, 5011.0] | 4000.0")
    assert rows[3].startswith("| Ant-v5 | 2000.0 [1000.0, 3000.0] (seeds 15-16), below sb3-contrib TRPO | 4000.0")
    # The aggregates take each task's runs as they are: two a task, whatever their seeds.
    from sb3_trpo_ext.benchmark.report import normalized_scores

    scores = normalized_scores(table)
    np.testing.assert_allclose(
        scores["trpo_ext"], np.array([[1000.0, 5010.0, 5010.0], [3000.0, 5011.0, 5011.0]]) / [4982, 3618, 366]
    )
    # A task with more runs gives its lowest seeds, in seed order, as many as the task with the fewest has (Hopper-v5,
    # now first: seeds 9 and 10 of 9-12).
    extra = runs_table([run_record("Hopper-v5", "trpo_ext", 9, 1.0), run_record("Hopper-v5", "trpo_ext", 12, 2.0)])
    scores = normalized_scores(pd.concat([extra, table], ignore_index=True))
    np.testing.assert_allclose(
        scores["trpo_ext"], np.array([[1.0, 1000.0, 5010.0], [5010.0, 3000.0, 5011.0]]) / [3618, 4982, 366]
    )

    table, curves = runs_table(earlier), curves_table(earlier)
    with pytest.raises(ValueError, match="Ant-v5: only sb3-trpo-ext TRPO's entries are frozen again"):
        with_newer_entries(table, curves, [run_record("Ant-v5", "trpo", 15, 1.0)])
    with pytest.raises(ValueError, match=r"Ant-v5: the newer entry's runs have \[2000\] steps, the earlier entry's \[1000\]"):
        with_newer_entries(table, curves, [run_record("Ant-v5", "trpo_ext", 15, 1.0, n_timesteps=2000)])
    with pytest.raises(ValueError, match=r"Walker2d-v5: .* no runs of .* earlier entry of it to replace .* with --tasks"):
        with_newer_entries(table, curves, [run_record("Walker2d-v5", "trpo_ext", 15, 1.0)])
    with pytest.raises(ValueError, match="Ant-v5: sb3-trpo-ext TRPO's run of seed 15 is given twice"):
        with_newer_entries(table, curves, [run_record("Ant-v5", "trpo_ext", 15, 1.0)] * 2)  # a folder named twice
    with pytest.raises(ValueError, match="Ant-v5: the newer entry's seeds 11, 15 must be fresh, the earlier entry used 10-11"):
        with_newer_entries(
            table, curves, [run_record("Ant-v5", "trpo_ext", 11, 1.0), run_record("Ant-v5", "trpo_ext", 15, 1.0)]
        )


def test_a_task_of_another_folder_and_budget_gets_a_row_of_its_own():
    from sb3_trpo_ext.benchmark.report import curves_table, readme_table, runs_table, with_other_tasks

    runs = [run_record("Hopper-v5", algo, seed, 3000.0) for algo, seeds in (("trpo_ext", (10, 11)), ("trpo", (0, 1)))
            for seed in seeds]  # fmt: skip
    humanoid = [run_record("Humanoid-v5", "trpo_ext", 15, 900.0, n_timesteps=2_000_000),
                run_record("Humanoid-v5", "trpo", 0, 700.0, n_timesteps=2_000_000)]  # fmt: skip
    table, curves = with_other_tasks(runs_table(runs), curves_table(runs), humanoid)
    assert sorted(set(curves.env_id)) == ["Hopper-v5", "Humanoid-v5"]
    rows = readme_table(table.assign(variant=""), {"Hopper-v5": "30 trials"})
    assert rows[0].startswith("| task (1k steps) | sb3-trpo-ext TRPO, seeds 10-11 | sb3-contrib TRPO, seeds 0-1 |")
    assert rows[2].startswith("| Hopper-v5 | 3000.0 [3000.0, 3000.0] |")
    assert rows[3] == (
        "| Humanoid-v5 (2M steps) | 900.0 [900.0, 900.0] (seeds 15) | 700.0 [700.0, 700.0] (seeds 0) | – | – | – |"
    )
    with pytest.raises(ValueError, match="Hopper-v5: the benchmark folder has runs of it already"):
        with_other_tasks(runs_table(runs), curves_table(runs), [run_record("Hopper-v5", "ppo", 0, 1.0)])
    with pytest.raises(ValueError, match="Humanoid-v5: sb3-contrib TRPO's run of seed 0 is given twice"):
        with_other_tasks(runs_table(runs), curves_table(runs), humanoid + humanoid[1:])
    with pytest.raises(ValueError, match=r"Humanoid-v5: runs of one budget make a row, got \[1000, 2000000\]"):
        with_other_tasks(runs_table(runs), curves_table(runs), [*humanoid, run_record("Humanoid-v5", "ppo", 0, 1.0)])


def test_the_report_command_answers_runs_that_make_no_report_with_one_line(tmp_path, capsys):
    from sb3_trpo_ext.benchmark.report import main

    for folder, records in (
        ("here", [run_record("Ant-v5", "trpo_ext", 10, 1.0)]),
        ("later", [run_record("Ant-v5", "trpo_ext", 15, 2.0)]),
    ):
        (tmp_path / folder / "runs").mkdir(parents=True)
        for record in records:
            (tmp_path / folder / "runs" / f"{record['env_id']}__{record['algo']}__seed{record['seed']}.json").write_text(
                json.dumps(record)
            )
    later = str(tmp_path / "later")
    assert main(["--output", str(tmp_path / "here"), "--entries", later, later]) == 1
    error = capsys.readouterr().err
    assert (
        error
        == "error: Ant-v5: sb3-trpo-ext TRPO's run of seed 15 is given twice; name each folder once, and one folder per task\n"
    )
    assert main(["--output", str(tmp_path / "here"), "--entries", later]) == 0


def test_a_baseline_s_variant_is_reported_where_it_does_better_on_average(tmp_path):
    from sb3_trpo_ext.benchmark.report import curves_table, load_variant_runs, readme_table, with_baseline_variants

    def run(env_id, algo, seed, final_return, **extra):
        return dict(env_id=env_id, algo=algo, seed=seed, n_timesteps=1000, final_return=final_return,
                    curve_steps=[0, 1000], curve_returns=[0.0, final_return], **extra)  # fmt: skip

    entry_runs = [
        run("Ant-v5", "trpo_ext", 10, 3000.0),
        run("Ant-v5", "trpo", 0, 400.0),
        run("Ant-v5", "trpo", 1, 600.0),
        run("Ant-v5", "ppo", 0, 500.0),
        run("Hopper-v5", "trpo", 0, 2000.0),
    ]
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("curve")} for r in entry_runs])
    # entry_variants' lines; sb3-contrib's seed 1 was made twice (the code behind it changed): the later line counts.
    variant = 'env_kwargs={"include_cfrc_ext_in_observation": False}'
    lines = [
        dict(env="Ant-v5", algo="trpo", variant=variant, seed=0, n_timesteps=1000, final_return=4000.0),
        dict(env="Ant-v5", algo="trpo", variant=variant, seed=1, n_timesteps=1000, final_return=1.0),
        dict(env="Ant-v5", algo="trpo", variant=variant, seed=1, n_timesteps=1000, final_return=4400.0),
        dict(env="Ant-v5", algo="ppo", variant=variant, seed=0, n_timesteps=1000, final_return=100.0),
    ]
    path = tmp_path / "ant.jsonl"
    path.write_text("".join(json.dumps({**line, "curve_steps": [0, 1000], "curve_returns": [0.0, line["final_return"]]})
                            + "\n" for line in lines))  # fmt: skip
    variant_runs = load_variant_runs([path])
    assert len(variant_runs) == 3

    reported, curves, choices = with_baseline_variants(table, curves_table(entry_runs), variant_runs)
    ant = reported[reported["env_id"] == "Ant-v5"].set_index("algo")
    assert sorted(ant.loc["trpo", "final_return"]) == [4000.0, 4400.0] and set(ant.loc["trpo", "variant"]) == {variant}
    assert ant.loc["ppo", "final_return"] == 500.0 and ant.loc["ppo", "variant"] == ""  # its variant did worse
    assert len(reported) == len(table)
    assert sorted(curves[(curves["algo"] == "trpo") & (curves["env_id"] == "Ant-v5")]["mean_return"]) == [0, 0, 4000, 4400]
    assert choices == [
        f"- Ant-v5, sb3-contrib TRPO: `{variant}` 4200.0 [4000.0, 4400.0] (seeds 0-1), the entry as is 500.0 "
        "[400.0, 600.0] (seeds 0-1); reported: the variant",
        f"- Ant-v5, SB3 PPO: `{variant}` 100.0 [100.0, 100.0] (seeds 0), the entry as is 500.0 [500.0, 500.0] "
        "(seeds 0); reported: the entry as is",
    ]
    tuning = {"Hopper-v5": "30 trials, 88 runs, 84.3M steps", "Ant-v5": "30 trials, 48 runs, 49.0M steps"}
    # rl-zoo's published returns are of 1M steps: a table of other budgets leaves them out.
    assert readme_table(reported, tuning)[2].endswith("(seeds 0) | – | – | – | " + tuning["Hopper-v5"] + " |")
    rows = readme_table(reported.assign(n_timesteps=1_000_000), tuning)
    assert rows[0].startswith("| task (1M steps) | sb3-trpo-ext TRPO, seeds 10 | sb3-contrib TRPO, seeds 0-1 |")
    assert rows[2] == "| Hopper-v5 | – | 2000.0 [2000.0, 2000.0] (seeds 0) | – | 3618 | 2410 | " + tuning["Hopper-v5"] + " |"
    assert rows[3] == (
        "| Ant-v5 | 3000.0 [3000.0, 3000.0], below sb3-contrib TRPO | 4200.0 [4000.0, 4400.0] † "
        "| 500.0 [500.0, 500.0] | 4982 | 1327 | " + tuning["Ant-v5"] + " |"
    )

    frozen = [{**variant_runs[0], "algo": "trpo_ext"}]
    with pytest.raises(ValueError, match="Ant-v5: a variant of sb3-trpo-ext TRPO's entry is not reported"):
        with_baseline_variants(table, curves_table(entry_runs), frozen)
    with pytest.raises(ValueError, match="one variant may stand against the entry"):
        with_baseline_variants(table, curves_table(entry_runs), [*variant_runs, {**variant_runs[0], "variant": "x=1"}])
    with pytest.raises(ValueError, match=r"the variant's runs have \[2000\] steps, the entry's \[1000\]"):
        with_baseline_variants(table, curves_table(entry_runs), [{**variant_runs[0], "n_timesteps": 2000}])


def test_speed_is_the_median_and_range_of_per_seed_ratios_on_one_machine():
    from sb3_trpo_ext.benchmark.report import speed_lines

    rows = [
        dict(
            env_id="CartPole-v1",
            algo=algo,
            seed=seed,
            same_settings=True,
            cpu="AMD EPYC",
            timesteps_done=1000,
            train_ms_per_update=train,
            rollout_seconds=rollout,
            steps_per_second=rate,
        )
        for algo, seed, train, rollout, rate in (
            ("trpo", 0, 100.0, 2.0, 100.0),
            ("trpo", 1, 100.0, 2.0, 100.0),
            ("trpo", 2, 100.0, 2.0, 100.0),
            ("trpo_ext", 0, 50.0, 1.0, 200.0),
            ("trpo_ext", 1, 25.0, 2.0, 300.0),
            ("trpo_ext", 2, 40.0, 1.0, 250.0),
        )
    ]
    lines = speed_lines(pd.DataFrame(rows))
    assert "on AMD EPYC" in lines[0]
    assert lines[-1] == (
        "| CartPole-v1 | sb3-trpo-ext TRPO | 3 | 2.50× [2.00, 4.00] | 2.00× [1.00, 2.00] | 2.50× [2.00, 3.00] |"
    )
    assert speed_lines(pd.DataFrame(rows).assign(same_settings=False)) == []  # each with its own settings


def test_the_readme_s_speed_figures_are_the_speed_report_s():
    root = Path(sb3_trpo_ext.__file__).parent.parent
    readme = (root / "README.md").read_text()
    paragraph = readme[readme.index("Speed, both TRPOs") :].split("\n\n")[0]
    figures = re.findall(r"\d\.\d\d× \[\d\.\d\d, \d\.\d\d\]", paragraph)
    summary = (root / "benchmarks" / "results" / "speed" / "summary.md").read_text()
    assert len(figures) == 6 and all(figure in summary for figure in figures)
    # The "Fast" promise at the top quotes the same medians: steps per second, then train(), CartPole before HalfCheetah.
    medians = [float(figure.split("×")[0]) for figure in figures]
    train, steps = medians[0:2], medians[4:6]
    fast = re.search(
        r"\*\*Fast\*\*: (\d\.\d)× the steps per second of sb3-contrib's TRPO on CartPole and (\d\.\d)× on HalfCheetah, "
        r"its `train\(\)` (\d\.\d)×\s+and (\d\.\d)× as fast",
        readme,
    )
    assert fast and [float(value) for value in fast.groups()] == [round(value, 1) for value in steps + train]


def test_the_time_to_a_return_is_the_median_first_evaluation_at_it():
    from sb3_trpo_ext.benchmark.report import times_to_return

    def curve(algo, seed, returns, seconds=(0.0, 10.0, 20.0, 30.0)):
        return [dict(env_id="Hopper-v5", algo=algo, seed=seed, step=1000 * i, seconds=s, mean_return=r)
                for i, (s, r) in enumerate(zip(seconds, returns, strict=True))]  # fmt: skip

    rows = curve("trpo_ext", 0, [0, 3618, 100, 4000]) + curve("trpo_ext", 1, [0, 0, 0, 3700]) + curve("trpo_ext", 2, [0] * 4)
    rows += curve("trpo", 0, [0, 0, 0, 3618]) + curve("trpo", 1, [0] * 4) + curve("trpo", 2, [0] * 4)
    rows += curve("ppo", 0, [0, 3618, 0, 0], seconds=[np.nan] * 4)
    times = times_to_return(pd.DataFrame(rows))
    assert times["Hopper-v5", "trpo_ext"] == (30.0, 2, 3)  # the first time at or above 3618; the third seed never
    assert times["Hopper-v5", "trpo"] == (float("inf"), 1, 3)  # most seeds never got there
    assert np.isnan(times["Hopper-v5", "ppo"][0])  # no times recorded


#: Runs each command line of argv (a module as ``-m`` runs it, or a script as ``python FILE`` does) with ``--help`` in
#: one interpreter, which pays the imports once; prints each one's exit status and whether it printed a usage.
HELP_RUNNER = """
import contextlib, io, json, runpy, sys
for target in sys.argv[1:]:
    sys.argv, out = [target, "--help"], io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            if target.endswith(".py"):
                runpy.run_path(target, run_name="__main__")
            else:
                runpy.run_module(target, run_name="__main__")
        status = 0
    except SystemExit as stop:
        status = stop.code or 0
    print(json.dumps([target, status, "usage:" in out.getvalue()]))
"""


def answers_to_help(targets: list[str], cwd: Path, path: list[str] = ()) -> list[list]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    result = subprocess.run([sys.executable, "-c", HELP_RUNNER, *targets], capture_output=True, text=True, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("[")]


def test_the_packaged_benchmark_commands_answer_help_outside_a_checkout(tmp_path):
    # What users run stays in the package: the benchmark and its report, from any folder.
    modules = ["sb3_trpo_ext.benchmark", "sb3_trpo_ext.benchmark.report"]
    assert answers_to_help(modules, tmp_path) == [[module, 0, True] for module in modules]


def test_the_maintainer_scripts_answer_help():
    root = Path(sb3_trpo_ext.__file__).parent.parent
    scripts = sorted(str(script) for script in (root / "scripts").glob("*.py"))
    assert scripts and all(Path(script).name in (root / "scripts" / "README.md").read_text() for script in scripts)
    # Run as files from the checkout, as scripts/README.md says: each imports the others by name from its folder.
    assert answers_to_help(scripts, root, [str(root / "scripts")]) == [[script, 0, True] for script in scripts]


def test_the_swimmer_discount_look_in_the_docs_is_the_one_its_runs_give():
    root = Path(sb3_trpo_ext.__file__).parent.parent
    runs = root / "benchmarks/results/development/variants/Swimmer-v5.jsonl"
    rows = [json.loads(line) for line in runs.read_text().splitlines()]
    latest = {(row["variant"], row["seed"]): row["final_return"] for row in rows}  # a run made again counts last
    # A look that chose an entry: the development record, not the current results.
    docs = " ".join((root / "docs" / "benchmark-history.md").read_text().split())
    entry, discount = ([latest[variant, seed] for seed in (100, 101, 102)] for variant in ("", "gamma=0.9999"))
    figures = ", ".join(f"{value:.1f}" for value in discount) + f" (mean {np.mean(discount):.1f}) against the entry's "
    figures += ", ".join(f"{value:.1f}" for value in entry) + f" (mean {np.mean(entry):.1f}); no better"
    assert figures in docs and np.mean(discount) <= np.mean(entry)
