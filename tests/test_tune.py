"""The tuning launcher: workers of one study, stale trials failed, every launch recorded."""

import optuna
from optuna.trial import TrialState

from sb3_trpo_ext.benchmark import tune
from sb3_trpo_ext.zoo import sample_trpo_ext_params


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


def test_workers_share_the_journal_with_seeds_of_their_own_away_from_the_reporting_seeds(tmp_path):
    args = tune.main.__globals__["argparse"].Namespace(
        env="Ant-v5", n_timesteps=300_000, trials=30, startup_trials=10, n_evaluations=3, eval_episodes=5,
        output=tmp_path, log_folder=tmp_path / "logs",
    )  # fmt: skip
    commands = [tune.worker_command(args, 1000 + index) for index in range(2)]

    def value(command, flag):
        return command[command.index(flag) + 1]

    assert {value(command, "--storage") for command in commands} == {str(tmp_path / "Ant-v5.log")}
    assert [int(value(command, "--seed")) for command in commands] == [1000, 1001]
    assert all(value(command, "--max-total-trials") == "30" for command in commands)
    assert all(value(command, "--pruner") == "median" and value(command, "--sampler") == "tpe" for command in commands)
