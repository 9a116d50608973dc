"""rl-zoo integration: packaged configs, the zoo command line, Optuna tuning through a shared storage."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium
import numpy as np
import optuna
import pytest
import yaml
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.env_util import make_vec_env

import sb3_trpo_ext.maskable
from sb3_trpo_ext import NPG, TRPO, MaskableTRPO
from sb3_trpo_ext.benchmark.settings import run_settings
from sb3_trpo_ext.zoo import ALGO, ALGORITHMS, ZOO_KEYS, config_path, register, unknown_hyperparameters
from sb3_trpo_ext.zoo.cli import main

ENTRIES = yaml.safe_load(config_path().read_text())
REQUIRED = [
    "CartPole-v1",
    "Acrobot-v1",
    "MountainCar-v0",
    "Pendulum-v1",
    "MountainCarContinuous-v0",
    "LunarLander-v3",
    "LunarLanderContinuous-v3",
    "BipedalWalker-v3",
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
    "Ant-v5",
    "Swimmer-v5",
    "Humanoid-v5",
    "Reacher-v5",
    "InvertedPendulum-v5",
    "InvertedDoublePendulum-v5",
    "default",
]


def test_the_source_tree_configs_are_links_to_the_packaged_ones():
    # zoo_configs/ALGO.yml, for users of a checkout, is a link to the very file the package ships: one copy, one name.
    folder = Path(__file__).parents[1] / "zoo_configs"
    assert sorted(path.name for path in folder.iterdir()) == sorted(f"{algo}.yml" for algo in ALGORITHMS)
    for algo in ALGORITHMS:
        link = folder / f"{algo}.yml"
        assert link.is_symlink() and link.resolve() == config_path(algo).resolve()


def test_config_has_every_required_entry_with_a_validation_comment():
    assert set(REQUIRED) <= set(ENTRIES)
    text = config_path().read_text().splitlines()
    for env_id in REQUIRED:
        line = text.index(f"{env_id}:")
        start = line
        while text[start - 1].startswith("#"):
            start -= 1
        comment = " ".join(text[start:line])
        # Says whether it is tuned, and how it was measured: steps, seeds and the returns.
        assert "Untuned" in comment or "Tuned" in comment, env_id
        if env_id != "default":  # not a task: nothing to measure
            assert "Validated:" in comment or "Measured at" in comment, env_id
            assert re.search(r"seeds \d+( \d+)+ ->", comment), env_id


@pytest.mark.parametrize("env_id", REQUIRED)
def test_every_key_is_accepted_and_the_values_construct_a_model(env_id):
    entry = ENTRIES[env_id]
    assert unknown_hyperparameters(entry) == []
    # The values as rl_zoo3 reads them: "lin_" schedules, policy_kwargs as a Python expression over dict and torch.nn
    settings = run_settings(env_id, entry, ALGO)
    kwargs = {key: value for key, value in settings.hyperparameters.items() if key != "policy_kwargs"}
    assert set(kwargs) == set(entry) - ZOO_KEYS - {"policy", "policy_kwargs"}
    model = settings.model(make_vec_env("Pendulum-v1", n_envs=settings.n_envs), seed=0)
    assert isinstance(model, TRPO) and all(getattr(model, key) == value for key, value in kwargs.items())
    assert all(model.policy_kwargs[key] == value for key, value in settings.hyperparameters.get("policy_kwargs", {}).items())


def test_unknown_hyperparameters_are_named():
    assert unknown_hyperparameters({"target_kll": 0.1, "n_envs": 2, "ent_coef": 0.0, "n_epochs": 3}) == [
        "n_epochs",
        "target_kll",
    ]


def test_configs_ship_inside_the_wheel(tmp_path):
    root = Path(__file__).parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(root)], check=True)
    (wheel,) = tmp_path.glob("sb3_trpo_ext-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"sb3_trpo_ext/zoo/{algo}.yml" for algo in ALGORITHMS} <= set(names)
    assert any(name.endswith("entry_points.txt") for name in names)


def test_register_adds_the_algorithm_sampler_and_converter():
    from rl_zoo3 import hyperparams_opt, utils

    register()
    assert utils.ALGOS[ALGO] is TRPO
    study = optuna.create_study()
    trial = study.ask()
    params = hyperparams_opt.HYPERPARAMS_SAMPLER[ALGO](trial, 1, 2, {})
    assert hyperparams_opt.HYPERPARAMS_CONVERTER[ALGO](trial.params) == params
    assert params["batch_size"] <= params["n_steps"]
    assert unknown_hyperparameters(params) == []
    TRPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2), **params)


@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_every_algorithm_is_registered_with_a_sampler_its_constructor_takes(algo):
    from rl_zoo3 import hyperparams_opt, utils

    register()
    assert utils.ALGOS[algo] is ALGORITHMS[algo]
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = hyperparams_opt.HYPERPARAMS_SAMPLER[algo](trial, 1, 1, {})
    assert unknown_hyperparameters(params, algo) == []
    assert ("line_search_accept_ratio" in params) == (algo != "npg_ext")
    env = InvalidActionEnvDiscrete(dim=4, n_invalid_actions=1) if algo == "maskable_trpo_ext" else "CartPole-v1"
    ALGORITHMS[algo]("MlpLstmPolicy" if algo == "recurrent_trpo_ext" else "MlpPolicy", env, **params)
    for env_id, entry in yaml.safe_load(config_path(algo).read_text()).items():
        assert unknown_hyperparameters(entry, algo) == [], env_id


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    return tmp_path


def zoo(*args):
    main([str(arg) for arg in args])


@pytest.mark.parametrize("env_id,extra", [("CartPole-v1", []), ("Pendulum-v1", ["-params", "normalize:True"])])
def test_train_writes_the_zoo_layout_and_enjoy_loads_it(workdir, env_id, extra):
    zoo("train", "--env", env_id, "-n", 2048, "--eval-freq", 1024, "--eval-episodes", 2, "--seed", 0, "-f", "logs", *extra)
    run = workdir / "logs" / ALGO / f"{env_id}_1"
    for name in (f"{env_id}.zip", "best_model.zip", "evaluations.npz", f"{env_id}/config.yml"):
        assert (run / name).exists(), name
    assert (run / env_id / "vecnormalize.pkl").exists() == bool(extra)
    assert (run / env_id / "vecnormalize.json").exists() == bool(extra)  # what enjoy reads
    assert "!!python" not in (run / env_id / "config.yml").read_text() + (run / env_id / "args.yml").read_text()
    model = TRPO.load(run / f"{env_id}.zip")
    assert model.num_timesteps == 2048
    assert len(np.load(run / "evaluations.npz")["results"]) == 2
    zoo("enjoy", "--env", env_id, "-f", "logs", "-n", 200, "--no-render", "--deterministic")
    zoo("record-video", "--env", env_id, "-f", "logs", "-n", 50, "-o", "videos")
    assert list((workdir / "videos").glob(f"final-model-{ALGO}-{env_id}-*.mp4"))


def test_enjoy_refuses_a_saved_config_or_statistics_that_would_run_code(workdir, capsys):
    zoo("train", "--env", "Pendulum-v1", "-n", 512, "--eval-freq", -1, "-f", "logs", "-params", "normalize:True",
        "n_steps:256", "batch_size:64")  # fmt: skip
    folder = workdir / "logs" / ALGO / "Pendulum-v1_1" / "Pendulum-v1"
    config = (folder / "config.yml").read_text()
    marker = workdir / "marker"
    enjoy = ("enjoy", "--env", "Pendulum-v1", "-f", "logs", "-n", 50, "--no-render")
    (folder / "config.yml").write_text(
        config.replace("normalize: true", f"normalize: __import__('os').system('touch {marker}')")
    )
    with pytest.raises(SystemExit) as exit_:
        zoo(*enjoy)
    assert exit_.value.code == 1 and not marker.exists()
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("sb3-trpo-ext: error: ") and "config.yml: normalize: \"__import__('os').system(" in error
    (folder / "config.yml").write_text(config)
    (folder / "vecnormalize.json").rename(folder / "statistics.json")
    with pytest.raises(SystemExit):
        zoo(*enjoy)
    assert "vecnormalize.pkl: VecNormalize statistics as a pickle" in capsys.readouterr().err
    (folder / "statistics.json").rename(folder / "vecnormalize.json")
    zoo(*enjoy)


def test_enjoy_skips_runs_without_a_model_and_names_what_is_missing(workdir, capsys):
    enjoy = ("enjoy", "--env", "CartPole-v1", "-f", "logs", "-n", 20, "--no-render")

    def error_of(*args):
        with pytest.raises(SystemExit) as exit_:
            zoo(*args)
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 1 and lines[-1].startswith("sb3-trpo-ext: error: ")
        return lines[-1]

    assert f"there is no folder logs/{ALGO} " in error_of(*enjoy)
    failed_train = ("train", "--env", "CartPole-v1", "-n", 256, "--eval-freq", -1, "-f", "logs")
    error_of(*failed_train, "--hyperparams", "target_kl:-1")  # fails after rl_zoo3 made its run folder
    assert (workdir / "logs" / ALGO / "CartPole-v1_1").is_dir()
    nothing_saved = f"no run of CartPole-v1 under logs/{ALGO} holds CartPole-v1.zip (looked in CartPole-v1_1)"
    assert error_of(*enjoy).endswith(nothing_saved)
    zoo(*failed_train)
    error_of(*failed_train, "--hyperparams", "target_kl:-1")
    zoo(*enjoy)
    assert f"loading logs/{ALGO}/CartPole-v1_2; skipped CartPole-v1_3: no CartPole-v1.zip" in capsys.readouterr().err
    assert error_of(*enjoy, "--exp-id", 3).endswith(f"--exp-id 3: logs/{ALGO}/CartPole-v1_3 holds no CartPole-v1.zip")
    looked = "holds best_model.zip (looked in CartPole-v1_3, CartPole-v1_2, CartPole-v1_1)"
    assert error_of(*enjoy, "--load-best").endswith(looked)


@pytest.mark.trusts_pickle  # the second enjoy is the trusted path
def test_enjoy_refuses_a_model_only_unpickling_loads_unless_trusted(workdir, capsys):
    zoo("train", "--algo", "ppo", "--env", "CartPole-v1", "-n", 256, "--eval-freq", -1, "-f", "logs")
    enjoy = ("enjoy", "--algo", "ppo", "--env", "CartPole-v1", "-f", "logs", "-n", 20, "--no-render")
    with pytest.raises(SystemExit) as exit_:
        zoo(*enjoy)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 1 and error.startswith("sb3-trpo-ext: error: ") and "pass --trust-pickle" in error
    zoo(*enjoy, "--trust-pickle")


def test_train_npg_and_maskable_trpo_from_the_command_line(workdir, monkeypatch):
    zoo("train", "--algo", "npg_ext", "--env", "CartPole-v1", "-n", 1024, "--eval-freq", -1, "-f", "logs")
    assert NPG.load(workdir / "logs" / "npg_ext" / "CartPole-v1_1" / "CartPole-v1.zip").num_timesteps == 2048
    # Any registered environment with action_masks(): sb3-contrib's, under an id of its own.
    gymnasium.register("MaskedIdentity-v0", entry_point=InvalidActionEnvDiscrete, kwargs=dict(dim=10, n_invalid_actions=5))
    masks_read = []
    monkeypatch.setattr(sb3_trpo_ext.maskable, "get_action_masks", lambda env: masks_read.append(1) or get_action_masks(env))
    zoo("train", "--algo", "maskable_trpo_ext", "--env", "MaskedIdentity-v0", "-n", 512, "--eval-freq", -1, "-f", "logs",
        "-params", "n_steps:256", "batch_size:64")  # fmt: skip
    model = MaskableTRPO.load(workdir / "logs" / "maskable_trpo_ext" / "MaskedIdentity-v0_1" / "MaskedIdentity-v0.zip")
    assert model.num_timesteps == 512
    assert len(masks_read) == 512  # the environment's masks, at every step


def test_plot_writes_learning_curves(workdir):
    zoo("train", "--env", "CartPole-v1", "-n", 1024, "--eval-freq", -1, "-f", "logs")
    zoo("plot", "--env", "CartPole-v1", "-f", "logs", "-w", 5, "-o", "curves.png")
    assert (workdir / "curves.png").stat().st_size > 10_000


def test_optimize_two_trials_in_a_journal_storage(workdir):
    zoo(
        "optimize",
        "--env",
        "CartPole-v1",
        "-n",
        1024,
        "--n-trials",
        2,
        "--n-jobs",
        1,
        "--sampler",
        "random",
        "--pruner",
        "none",
        "--n-evaluations",
        1,
        "--eval-episodes",
        2,
        "--storage",
        "study.log",
        "--study-name",
        "shared",
        "-f",
        "logs",
    )
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend("study.log"))
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert {"target_kl", "cg_damping", "line_search_accept_ratio", "sub_sampling_factor"} <= set(trials[0].params)


def test_the_search_space_covers_what_decides_returns():
    import optuna

    from sb3_trpo_ext.zoo import sample_trpo_ext_params

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = sample_trpo_ext_params(trial, n_actions=6, n_envs=2, additional_args={})
    assert {
        "n_steps",
        "batch_size",
        "gamma",
        "gae_lambda",
        "learning_rate",
        "n_critic_updates",
        "target_kl",
        "cg_damping",
    } <= set(params)
    assert {"net_arch", "activation_fn", "log_std_init", "ortho_init"} <= set(params["policy_kwargs"])
    assert params["batch_size"] <= params["n_steps"] and trial.user_attrs["samples_per_update"] == 2 * params["n_steps"]
    distributions = trial.distributions
    assert distributions["cg_damping"].high >= 0.8  # sb3-contrib's default damping on 8 action dimensions
    assert distributions["target_kl"].high >= 0.24  # its HalfCheetah trust region, 6 x 0.04
    TRPO("MlpPolicy", "Pendulum-v1", **params)  # the sampled settings build a model


def one_line_error(capsys, *args) -> str:
    """Run the command line on wrong input: it must end with exit status 1 and one line on stderr, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        zoo(*args)
    assert exit_info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sb3-trpo-ext: error: "), lines
    return lines[0]


@pytest.mark.parametrize("command", ["train", "enjoy"])
def test_unknown_env_id_is_one_line(workdir, capsys, command):
    line = one_line_error(capsys, command, "--env", "CartPol-v1", "-n", 256)
    assert "--env: unknown task 'CartPol-v1' (did you mean 'CartPole-v1'?)" in line


def test_a_zoo_task_and_one_of_gym_packages_are_known_tasks(workdir, capsys, monkeypatch):
    import sb3_trpo_ext.zoo.cli as cli

    monkeypatch.setattr(cli, "_run", lambda *args: None)  # the check only, not the training
    zoo("train", "--env", "CartPoleNoVel-v1", "-n", 256)
    (workdir / "my_tasks.py").write_text(
        "import gymnasium as gym\ngym.register('MyCartPole-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv')\n"
    )
    monkeypatch.syspath_prepend(str(workdir))
    zoo("train", "--env", "MyCartPole-v0", "--gym-packages", "my_tasks", "-n", 256)
    assert capsys.readouterr().err == ""


def test_misspelled_hyperparameter_in_an_entry_is_one_line(workdir, capsys):
    (workdir / "mine.yml").write_text("CartPole-v1:\n  n_timesteps: 1000\n  policy: MlpPolicy\n  target_kll: 0.02\n")
    line = one_line_error(capsys, "train", "--env", "CartPole-v1", "-conf", "mine.yml")
    assert (
        "mine.yml: the entry for CartPole-v1 has hyperparameters TRPO does not take: 'target_kll' (did you mean 'target_kl'?)"
        in line
    )


def test_misspelled_hyperparameter_on_the_command_line_is_one_line(workdir, capsys):
    line = one_line_error(capsys, "train", "--env", "CartPole-v1", "-n", 256, "--hyperparams", "gamma:0.9", "target_kll:0.01")
    assert "--hyperparams has hyperparameters TRPO does not take: 'target_kll' (did you mean 'target_kl'?)" in line


@pytest.mark.parametrize(
    "item, message",
    [
        ("target_kl:-1", "target_kl must be a finite number > 0"),
        ("cg_max_steps:0", "cg_max_steps must be an integer >= 1, got 0"),
        ("batch_size:4096", "batch_size must be <= n_steps * n_envs = 2048"),
        ("target_kl:'exp_0.02'", "target_kl schedule 'exp_0.02' in the zoo entry: only 'lin_<initial value>' is known"),
    ],
)
def test_a_bad_hyperparameter_value_is_one_line(workdir, capsys, item, message):
    line = one_line_error(capsys, "train", "--env", "CartPole-v1", "-n", 256, "--eval-freq", -1, "--hyperparams", item)
    assert message in line


def test_train_and_enjoy_use_one_torch_thread_unless_told(workdir, monkeypatch):
    import sb3_trpo_ext.zoo.cli as cli

    passed = []
    monkeypatch.setattr(cli, "_run", lambda entry_point, program, args: passed.append(args))
    run = workdir / "rl-trained-agents" / ALGO / "CartPole-v1_1"  # rl_zoo3's default folder, with a model to load
    run.mkdir(parents=True)
    (run / "CartPole-v1.zip").touch()
    zoo("train", "--env", "CartPole-v1")
    zoo("enjoy", "--env", "CartPole-v1", "--num-threads", 3)
    zoo("record-video", "--env", "CartPole-v1")  # rl_zoo3's record_video takes no --num-threads
    assert passed[0][passed[0].index("--num-threads") + 1] == "1"
    assert passed[1].count("--num-threads") == 1 and passed[1][passed[1].index("--num-threads") + 1] == "3"
    assert "--num-threads" not in passed[2]


def test_train_takes_a_target_kl_schedule_in_rl_zoo3s_lin_form(workdir, capsys):
    entry = "  n_timesteps: 128\n  policy: MlpPolicy\n  n_steps: 64\n  batch_size: 32\n  target_kl: {}\n"
    (workdir / "mine.yml").write_text("Pendulum-v1:\n" + entry.format("lin_0.02"))
    zoo("train", "--env", "Pendulum-v1", "-conf", "mine.yml", "--eval-freq", -1, "-f", "logs")
    model = TRPO.load(workdir / "logs" / ALGO / "Pendulum-v1_1" / "Pendulum-v1.zip")
    assert [model.target_kl(p) for p in (1.0, 0.25)] == pytest.approx([0.02, 0.005])
    (workdir / "mine.yml").write_text("Pendulum-v1:\n" + entry.format("exp_0.02"))
    line = one_line_error(capsys, "train", "--env", "Pendulum-v1", "-conf", "mine.yml", "--eval-freq", -1, "-f", "logs")
    assert "target_kl schedule 'exp_0.02' in the zoo entry: only 'lin_<initial value>' is known" in line


def test_help_goes_to_stdout_with_exit_status_0(capsys):
    main(["--help"])
    out, err = capsys.readouterr()
    assert out.startswith("usage: sb3-trpo-ext COMMAND") and err == ""
    assert all(command in out for command in ("train", "optimize", "enjoy", "record-video", "plot"))
    assert all(algo in out for algo in ALGORITHMS)
    assert "``" not in out


@pytest.mark.parametrize(
    "argv, message", [(["fly"], "unknown command 'fly'"), (["tran"], "did you mean 'train'"), ([], "a command is needed")]
)
def test_an_unknown_command_says_so(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
