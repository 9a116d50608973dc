"""The tuning launcher: workers of one study, stale trials failed, every launch recorded."""

import inspect
import re
import warnings

import entry_variants
import optuna
import pytest
import tune
from optuna.trial import TrialState
from torch import nn

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.benchmark.provenance import provenance
from sb3_trpo_ext.benchmark.settings import run_settings, zoo_entry
from sb3_trpo_ext.zoo import ALGO, sample_trpo_ext_params


def test_a_resumed_study_fails_the_trials_of_dead_workers_and_records_each_launch(tmp_path):
    journal = tmp_path / "Task-v0.log"
    study = tune._study(journal, "Task-v0")
    trial = study.ask()
    params = sample_trpo_ext_params(trial, 1, 2, {})
    study.tell(trial, 1.0)
    study.ask()  # a worker killed in the middle of this trial leaves it RUNNING
    assert tune.fail_running_trials(study) == [1]
    assert [trial.state for trial in study.get_trials()] == [TrialState.COMPLETE, TrialState.FAIL]
    tune.record_launch(study, ["first"])
    tune.record_launch(tune._study(journal, "Task-v0"), ["second"])
    launches = optuna.load_study(study_name="Task-v0", storage=tune._storage(journal)).user_attrs["launches"]
    assert [launch["command"] for launch in launches] == ["first", "second"]
    assert {"commit", "versions", "code", "started"} <= set(launches[0])
    before = journal.read_bytes()
    summary = tune.summary(journal, "Task-v0")
    assert journal.read_bytes() == before  # reading a committed journal leaves it as it is
    assert (summary["trials"], summary["complete"], summary["fail"], summary["best_value"]) == (2, 1, 1, 1.0)
    assert summary["best_hyperparameters"] == params  # the entry to paste into the zoo file


def test_a_resumed_study_s_workers_take_seeds_no_earlier_launch_took(tmp_path, monkeypatch):
    # Why: a sampler seeded as before proposes the same first random trials again.
    study = tune._study(tmp_path / "Task-v0.log", "Task-v0")
    first, again = (optuna.samplers.TPESampler(n_startup_trials=10, seed=1000) for _ in range(2))
    space = optuna.distributions.FloatDistribution(0.0, 1.0)
    assert first.sample_independent(study, study.ask(), "x", space) == again.sample_independent(study, study.ask(), "x", space)
    # Three launches of the launcher itself (its workers stood in for), on one journal.
    commands, real_popen = [], tune.subprocess.Popen

    class Worker:
        def wait(self):
            return 0

    def popen(command, **kwargs):  # the workers stand in; other processes (git, for the provenance) run
        if "optimize" not in command:
            return real_popen(command, **kwargs)
        commands.append(command)
        return Worker()

    monkeypatch.setattr(tune.subprocess, "Popen", popen)
    for workers in (2, 1, 2):
        tune.main(["--env", "Task-v0", "--output", str(tmp_path), "--workers", str(workers)])
    assert [int(command[command.index("--seed") + 1]) for command in commands] == [1000, 1001, 1002, 1003, 1004]
    launches = optuna.load_study(study_name="Task-v0", storage=tune._storage(tmp_path / "Task-v0.log")).user_attrs["launches"]
    assert [launch["seeds"] for launch in launches] == [[1000, 1001], [1002], [1003, 1004]]
    # A launch recorded before its seeds were: its first worker's seed and the next count as taken.
    tune.record_launch(study, ["python", "-m", "sb3_trpo_ext.zoo", "optimize", "--seed", "1010"])
    assert tune.worker_seeds(study, 1000, 2) == [1012, 1013]


def test_workers_share_the_journal_with_seeds_of_their_own_away_from_the_reporting_seeds(tmp_path):
    args = tune.main.__globals__["argparse"].Namespace(
        env="Ant-v5", n_timesteps=300_000, trials=30, startup_trials=10, n_evaluations=3, eval_episodes=5,
        output=tmp_path, log_folder=tmp_path / "logs", study="Ant-v5", env_kwargs=None,
    )  # fmt: skip
    commands = [tune.worker_command(args, 1000 + index) for index in range(2)]

    def value(command, flag):
        return command[command.index(flag) + 1]

    assert {value(command, "--storage") for command in commands} == {str(tmp_path / "Ant-v5.log")}
    assert "--env-kwargs" not in commands[0]
    args.study, args.env_kwargs = "Ant-v5-no-cfrc", ["include_cfrc_ext_in_observation:False"]
    other = tune.worker_command(args, 1000)  # a study of the task with other keyword arguments: a journal of its own
    assert value(other, "--storage") == str(tmp_path / "Ant-v5-no-cfrc.log") and value(other, "--study-name") == args.study
    assert value(other, "--env-kwargs") == "include_cfrc_ext_in_observation:False" and value(other, "--env") == "Ant-v5"
    assert [int(value(command, "--seed")) for command in commands] == [1000, 1001]
    assert all(value(command, "--max-total-trials") == "30" for command in commands)
    assert all(value(command, "--pruner") == "median" and value(command, "--sampler") == "tpe" for command in commands)


@pytest.mark.parametrize("env_id", ["Walker2d-v5", "Swimmer-v5", "Ant-v5", "HalfCheetah-v5"])
def test_a_packaged_entry_enqueued_as_a_trial_samples_back_to_the_same_hyperparameters(tmp_path, env_id):
    entry = run_settings(*zoo_entry(ALGO, env_id), ALGO).hyperparameters
    study = tune._study(tmp_path / "study.log", env_id)
    tune.enqueue_entry(study, env_id)
    tune.enqueue_entry(study, env_id)  # a second launch with --enqueue-entry adds nothing
    assert len(study.get_trials(states=[TrialState.WAITING])) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fixed value outside the search space would only warn
        sampled = sample_trpo_ext_params(study.ask(), 6, 2, {})
    defaults = {name: p.default for name, p in inspect.signature(TRPO.__init__).parameters.items()}
    for key, value in sampled.items():
        if key == "policy_kwargs":
            expected = {"log_std_init": 0.0, "ortho_init": True, "activation_fn": nn.Tanh}
            expected |= {"net_arch": dict(pi=[64, 64], vf=[64, 64])} | (entry.get(key) or {})
            assert value == expected
        else:
            assert value == pytest.approx(entry.get(key, defaults[key]), rel=1e-12), key


def test_an_entry_outside_the_search_space_is_refused_by_name():
    entry = dict(n_steps=1000, batch_size=100)
    with pytest.raises(ValueError, match="n_steps 1000 and batch_size 100 must be powers of 2"):
        tune.entry_as_trial(entry)
    with pytest.raises(ValueError, match=r"net_arch \[400, 300\]"):
        tune.entry_as_trial(dict(policy_kwargs="dict(net_arch=[400, 300])"))
    with pytest.raises(ValueError, match="activation_fn"):
        tune.entry_as_trial(dict(policy_kwargs="dict(activation_fn=nn.ELU)"))


def test_a_variant_can_be_a_study_trial_with_changes_over_it(tmp_path, monkeypatch):
    monkeypatch.setattr(tune, "DEFAULT_OUTPUT", tmp_path)
    study = tune._study(tmp_path / "CartPole-v1.log", "CartPole-v1")
    trial = study.ask()
    sampled = sample_trpo_ext_params(trial, 1, 1, {})
    study.tell(trial, 1.0)
    assert entry_variants.study_trial_hyperparameters("CartPole-v1", 0) == sampled
    record = entry_variants.run("CartPole-v1", "trial=0, n_critic_updates=3", 100, 64, 10_000)
    used = record["hyperparameters"]
    assert used["n_steps"] == repr(sampled["n_steps"]) and used["target_kl"] == repr(sampled["target_kl"])
    assert used["policy_kwargs"] == repr(sampled["policy_kwargs"])
    assert used["n_critic_updates"] == "3"  # the variant's own changes win over the trial's
    with pytest.raises(ValueError, match=r"trial=5: .* has trials 0-0"):
        entry_variants.study_trial_hyperparameters("CartPole-v1", 5)


def test_a_variant_is_run_again_once_its_entry_code_or_budget_has_changed(monkeypatch, capsys):
    record = entry_variants.run("CartPole-v1", "", 100, 64, 10_000)
    current = provenance(ALGO)

    def to_make(records, n_timesteps=64, current=current):
        variants = {
            variant: entry_variants.variant_settings("CartPole-v1", variant, n_timesteps) for variant in ["", "target_kl=0.02"]
        }
        return entry_variants.runs_to_make(records, "CartPole-v1", ALGO, variants, [100, 101], current)

    rest = [("", 101), ("target_kl=0.02", 100), ("target_kl=0.02", 101)]
    assert to_make([record]) == rest
    # Lines from before n_envs, n_timesteps and env_kwargs were recorded are judged by what they do record.
    assert to_make([{k: v for k, v in record.items() if k not in ("n_envs", "n_timesteps", "env_kwargs")}]) == rest
    assert to_make([record], n_timesteps=128) == [("", 100), *rest]
    assert "n_timesteps differ" in capsys.readouterr().out
    assert to_make([record], current={**current, "code": "0000000000000000"}) == [("", 100), *rest]
    assert "the algorithm's code" in capsys.readouterr().out

    packaged = entry_variants.zoo_entry

    def changed_entry(algo, env_id):
        name, entry = packaged(algo, env_id)
        return name, {**entry, "target_kl": 0.05}

    monkeypatch.setattr(entry_variants, "zoo_entry", changed_entry)
    assert to_make([record]) == [("", 100), *rest]  # the entry behind "" is no longer the one that line ran
    assert "hyperparameters differ" in capsys.readouterr().out


def test_a_variant_s_discount_is_vecnormalize_s_too_as_in_an_entry():
    # rl_zoo3 gives VecNormalize an entry's gamma; a variant must run as the entry it would be.
    entry = entry_variants.variant_settings("Hopper-v5", "")
    assert entry.normalize_kwargs == {"gamma": entry.hyperparameters["gamma"]}
    variant = entry_variants.variant_settings("Hopper-v5", "gamma=0.97, gae_lambda=0.9")
    assert variant.normalize_kwargs == {"gamma": 0.97} and variant.hyperparameters["gamma"] == 0.97
    assert entry_variants.variant_settings("Hopper-v5", "gae_lambda=0.9").normalize_kwargs == entry.normalize_kwargs
    unnormalised = entry_variants.variant_settings("CartPole-v1", "gamma=0.97")
    assert unnormalised.normalize_kwargs is None and unnormalised.hyperparameters["gamma"] == 0.97


def test_a_variant_schedule_in_rl_zoo3s_lin_form_becomes_a_schedule_as_in_an_entry():
    scheduled = entry_variants.variant_settings("Walker2d-v5", "target_kl='lin_0.06', learning_rate='lin_1e-3'")
    for key, start in (("target_kl", 0.06), ("learning_rate", 1e-3)):
        schedule = scheduled.hyperparameters[key]
        assert [schedule(p) for p in (1.0, 0.5, 0.0)] == pytest.approx([start, start / 2, 0.0])
    message = "target_kl schedule 'exp_0.06' in variant \"target_kl='exp_0.06'\" of Walker2d-v5"
    with pytest.raises(ValueError, match=re.escape(message)):
        entry_variants.variant_settings("Walker2d-v5", "target_kl='exp_0.06'")
