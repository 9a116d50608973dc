"""
Files from strangers, tried as an attacker would (docs/security.md): imports by name, callables from YAML, places to
write, memory from small files and silent wrong statistics; each technique and a variant of it. A refusal is one line
that names the file or entry and the way out; nothing is imported, nothing is written outside the run's folder, and
the memory a refused file makes a fresh process take grows by under 300 MB.
"""

import importlib.util
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch as th
import yaml
from attacks import box, data_padded_to, declaring, edited, with_space, with_values, write_memory_cases, zip_with_a_bomb
from helpers import ACTION_SPACES, MaskedToyEnv, ToyEnv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3 import PPO
from stable_baselines3.common import utils as sb3_utils
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_trpo_ext import NPG, TRPO, MaskableTRPO, RecurrentTRPO
from sb3_trpo_ext.safe_loading import (
    LIMIT_VARIABLE,
    LoadLimitError,
    UnsafeFileError,
    custom_objects_without_pickle,
    load_vec_normalize,
    max_load_bytes,
    save_vec_normalize,
)
from sb3_trpo_ext.safe_loading.allowlist import CONFIG_CLASSES
from sb3_trpo_ext.safe_loading.archive import check_tensors
from sb3_trpo_ext.safe_loading.plain import rebuild_space
from sb3_trpo_ext.zoo.cli import check_config_entry, main
from sb3_trpo_ext.zoo.guard import CLASS_KEYS, _bounded_frame_stack, check_saved_config, guarded, read_zoo_yaml

#: Tests that run rl_zoo3's own code (the command line, its name lookups, its wrappers): not in a base install.
needs_zoo = pytest.mark.skipif(importlib.util.find_spec("rl_zoo3") is None, reason="needs the zoo extra")
SMALL = dict(n_steps=32, batch_size=32, n_critic_updates=1, policy_kwargs=dict(net_arch=[8]), seed=0)
MARKER_MODULE = "import pathlib\npathlib.Path(__file__).with_name('marker').touch()\n"


def zip_of(model) -> bytes:
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()


def small(algorithm, env, policy="MlpPolicy", **kwargs):
    return algorithm(policy, DummyVecEnv([env]), **{**SMALL, **kwargs})


@pytest.fixture(scope="module")
def zips() -> dict[str, bytes]:
    box3 = ACTION_SPACES["box3"]
    return {
        "trpo": zip_of(small(TRPO, lambda: ToyEnv(box3))),
        "npg": zip_of(small(NPG, lambda: ToyEnv(box3))),
        "maskable": zip_of(small(MaskableTRPO, lambda: MaskedToyEnv(ACTION_SPACES["discrete"]))),
        "maskable_image": zip_of(small(MaskableTRPO, lambda: MaskedToyEnv(ACTION_SPACES["discrete"], "image"), "CnnPolicy")),
        "recurrent": zip_of(
            small(RecurrentTRPO, lambda: ToyEnv(ACTION_SPACES["box1"]), "MlpLstmPolicy", policy_kwargs=dict(net_arch=[8]))
        ),
        "ppo": zip_of(PPO("MlpPolicy", DummyVecEnv([lambda: ToyEnv(box3)]), n_steps=32, batch_size=32)),
    }


@pytest.fixture
def importable(tmp_path, monkeypatch):
    """``tmp_path`` as the folder a victim runs Python in: the current directory, importable."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [name for name in sys.modules if name.startswith(("evil", "stable_baselines3_evil", "rl-trained"))]:
        monkeypatch.delitem(sys.modules, name)
    return tmp_path


# --- 1. no import from a zip's text ----------------------------------------------------------------------------------

LOADERS = {
    "TRPO": lambda path: TRPO.load(path),
    "NPG": lambda path: NPG.load(path),
    "MaskableTRPO": lambda path: MaskableTRPO.load(path),
    "RecurrentTRPO": lambda path: RecurrentTRPO.load(path),
    "PPO with custom_objects_without_pickle": lambda path: PPO.load(  # SB3 before 2.6 pickles clip_range as a function
        path, custom_objects=custom_objects_without_pickle(path, PPO, {"clip_range": 0.2})
    ),
}
ZIP_OF = {"TRPO": "trpo", "NPG": "npg", "MaskableTRPO": "maskable", "RecurrentTRPO": "recurrent"}


def run_folder_module(folder: Path) -> str:
    """A module inside a downloaded run folder, as rl_zoo3's load_from_hub lays it out: the attack's second chain."""
    run = folder / "rl-trained-agents" / "trpo_ext" / "CartPole-v1_1"
    run.mkdir(parents=True)
    (run / "evil.py").write_text(MARKER_MODULE)
    return "rl-trained-agents.trpo_ext.CartPole-v1_1.evil:CartPole-v1"


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("env", ["rl_zoo3.benchmark:CartPole-v1", "run folder", "evil_env:CartPole-v1", "evil/Env-v0"])
def test_an_env_id_from_a_zip_imports_nothing(importable, zips, loader, env):
    (importable / "evil_env.py").write_text(MARKER_MODULE)
    env = run_folder_module(importable) if env == "run folder" else env
    path = importable / "model.zip"
    path.write_bytes(edited(zips[ZIP_OF.get(loader, "ppo")], with_values(env=env)))
    with pytest.raises(UnsafeFileError, match=r"env: the file names the environment .*SB3 never saves.*trust_pickle"):
        LOADERS[loader](path)
    assert not any(importable.rglob("marker")) and "rl_zoo3.benchmark" not in sys.modules


def test_an_env_from_a_zip_is_refused_even_when_registered_or_an_env_is_given(importable, zips):
    # SB3 never saves one; loading one would set the file's name over the model's environment, given or not.
    path = importable / "model.zip"
    path.write_bytes(edited(zips["trpo"], with_values(env="CartPole-v1")))
    with pytest.raises(UnsafeFileError, match="env: the file names the environment 'CartPole-v1'"):
        TRPO.load(path, env=DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box3"])]))
    path.write_bytes(edited(zips["trpo"], with_values(env=None)))
    assert TRPO.load(path).get_env() is None  # what SB3 would have saved, had it saved one


@pytest.mark.trusts_pickle
def test_a_trusted_zip_imports_what_it_names(importable, zips):
    (importable / "evil_env.py").write_text(MARKER_MODULE)
    path = importable / "model.zip"
    path.write_bytes(edited(zips["trpo"], with_values(env="evil_env:CartPole-v1")))
    with pytest.raises(Exception):  # noqa: B017  # gymnasium then finds no such id, after the import ran
        TRPO.load(path, trust_pickle=True)
    assert (importable / "marker").exists()


@needs_zoo
def test_enjoy_refuses_a_zip_naming_a_module_in_its_folder(importable, zips, capsys):
    module = run_folder_module(importable)
    run = importable / "rl-trained-agents" / "trpo_ext" / "CartPole-v1_1"
    cartpole = zip_of(small(TRPO, lambda: __import__("gymnasium").make("CartPole-v1")))
    (run / "CartPole-v1.zip").write_bytes(edited(cartpole, with_values(env=module)))
    with pytest.raises(SystemExit) as exit_:
        main(["enjoy", "--env", "CartPole-v1", "-f", "rl-trained-agents", "--no-render", "-n", "10"])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 1 and "env: the file names the environment" in message and "trust" in message
    assert not any(importable.rglob("marker"))


# --- 2. a config names no callable -----------------------------------------------------------------------------------


def conf_file(folder: Path, entry: dict) -> str:
    path = folder / "other.yml"
    path.write_text(yaml.safe_dump({"CartPole-v1": {"n_timesteps": 256, "policy": "MlpPolicy", **entry}}))
    return str(path)


@needs_zoo
@pytest.mark.parametrize(
    "entry,named",
    [
        ({"callback": [{"subprocess.run": {"args": ["sh", "-c", "touch marker"]}}]}, "callback names 'subprocess.run'"),
        ({"env_wrapper": [{"os.system": {"command": "touch marker"}}]}, "env_wrapper names 'os.system'"),  # variant
        ({"policy": "subprocess.Popen"}, "policy 'subprocess.Popen' is not a policy class"),  # variant
    ],
)
def test_a_conf_file_naming_a_callable_is_refused_before_anything_runs(importable, capsys, entry, named):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--env", "CartPole-v1", "--conf-file", conf_file(importable, entry), "-f", "logs"])
    message = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and named in message and "--trust-pickle" in message and len(message.splitlines()) == 1
    assert not (importable / "marker").exists() and not (importable / "logs").exists()


@needs_zoo
def test_hyperparams_naming_a_callable_are_refused_where_rl_zoo3_would_import_it(importable, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--env", "CartPole-v1", "-n", "256", "-f", "logs", "--hyperparams", "callback:'os.system'"])
    assert exit_.value.code == 1 and "callback names 'os.system'" in capsys.readouterr().err
    assert not (importable / "marker").exists()


def test_a_trusted_conf_file_is_not_checked(tmp_path):
    conf = conf_file(tmp_path, {"callback": [{"subprocess.run": {"args": ["true"]}}]})
    check_config_entry(["--env", "CartPole-v1", "--conf-file", conf], trusted=True)
    with pytest.raises(UnsafeFileError, match=r"callback names 'subprocess\.run'"):
        check_config_entry(["--env", "CartPole-v1", "--conf-file", conf])


# --- 3. names match exactly, not by prefix ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,name",
    [
        ("env_wrapper", "stable_baselines3_evil.Evil"),
        ("env_wrapper", "gymnasium.wrappersX.Evil"),
        ("env_wrapper", "gymnasium.wrappers.RecordVideo"),  # variant: a class of an allowed package, not allowed
        ("callback", "rl_zoo3.benchmark.Evil"),  # variant: a module with import-time effects
        ("vec_env_wrapper", "stable_baselines3.common.vec_env.VecFrameStackEvil"),
    ],
)
def test_a_saved_config_naming_a_class_by_prefix_imports_nothing(importable, key, name):
    (importable / "stable_baselines3_evil.py").write_text(MARKER_MODULE + "class Evil: pass\n")
    (importable / "gymnasium_wrappersX.py").write_text(MARKER_MODULE)
    (importable / "config.yml").write_text(yaml.safe_dump({key: [name]}))
    with pytest.raises(UnsafeFileError, match=rf"config.yml: {key} names '{name}', not a class a file may name"):
        check_saved_config(importable)
    assert not (importable / "marker").exists() and "stable_baselines3_evil" not in sys.modules
    assert "rl_zoo3.benchmark" not in sys.modules


# --- 4. allowed classes get data, not places -------------------------------------------------------------------------

PLACES = [
    ("env_wrapper", "stable_baselines3.common.monitor.Monitor", {"filename": "{outside}/monitor"}, "filename"),
    ("vec_env_wrapper", "stable_baselines3.common.vec_env.VecMonitor", {"filename": "{outside}/monitor"}, "filename"),
    ("env_wrapper", "gymnasium.wrappers.RecordVideo", {"video_folder": "{outside}"}, "not a class"),
    ("callback", "stable_baselines3.common.callbacks.CheckpointCallback", {"save_freq": 1, "save_path": "{outside}"},
     "not a class"),  # variant
    ("env_wrapper", "stable_baselines3.common.monitor.Monitor", {"info_keywords": ["{outside}"], "filename": "x"},
     "filename"),  # variant: the header injection needs the file
]  # fmt: skip


@needs_zoo
@pytest.mark.parametrize("key,name,kwargs,refused", PLACES)
def test_an_allowed_class_is_given_no_place_to_write(tmp_path, key, name, kwargs, refused):
    outside = tmp_path / "outside"
    kwargs = {arg: value.format(outside=outside) if isinstance(value, str) else value for arg, value in kwargs.items()}
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yml").write_text(yaml.safe_dump({key: [{name: kwargs}]}))
    with pytest.raises(UnsafeFileError, match=rf"config.yml: {key} .*{refused}.*--trust-pickle"):
        check_saved_config(run)
    import rl_zoo3.utils

    with guarded(), pytest.raises(UnsafeFileError, match=refused):  # where rl_zoo3 itself resolves the name
        if key == "callback":
            rl_zoo3.utils.get_callback_list({key: [{name: kwargs}]})
        else:
            rl_zoo3.utils.get_wrapper_class({key: [{name: kwargs}]}, key)
    assert not outside.exists()


@needs_zoo
def test_an_allowed_class_with_allowed_arguments_is_built(tmp_path):
    import rl_zoo3.utils

    with guarded():
        wrap = rl_zoo3.utils.get_wrapper_class({"env_wrapper": [{"gymnasium.wrappers.TimeLimit": {"max_episode_steps": 7}}]})
        env = wrap(__import__("gymnasium").make("CartPole-v1"))
        callbacks = rl_zoo3.utils.get_callback_list(
            {"callback": [{"stable_baselines3.common.callbacks.StopTrainingOnMaxEpisodes": {"max_episodes": 3}}]}
        )
    assert env._max_episode_steps == 7 and callbacks[0].max_episodes == 3


# --- 5. memory from small files --------------------------------------------------------------------------------------


@needs_zoo
@pytest.mark.slow
def test_small_files_asking_for_much_memory_are_refused_before_it_is_taken(tmp_path, zips):
    names = write_memory_cases(tmp_path, zips)
    for name in ("trpo", "maskable", "recurrent"):
        (tmp_path / f"honest_{name}.zip").write_bytes(zips[name])
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("attacks.py")), str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cases = json.loads(result.stdout.strip().splitlines()[-1])
    assert {case["case"] for case in cases} >= set(names)
    for case in cases:
        print(f"{case['growth'] / 2**20:6.1f} MB  {case['case']}: {case['refused']}")
        assert case["refused"], f"{case['case']} was loaded"
        assert len(case["refused"].splitlines()) == 1, case
        assert case["growth"] < 300 * 2**20, case


def test_the_limit_is_one_gib_unless_set(monkeypatch):
    monkeypatch.delenv(LIMIT_VARIABLE, raising=False)
    assert max_load_bytes() == 2**30
    monkeypatch.setenv(LIMIT_VARIABLE, "12345")
    assert max_load_bytes() == 12345
    monkeypatch.setenv(LIMIT_VARIABLE, "lots")
    with pytest.raises(ValueError, match=f"{LIMIT_VARIABLE}='lots' is not a whole number of bytes"):
        max_load_bytes()


# At the limit: each size a file declares is counted as docs/security.md says, so one byte past the limit is refused
# and the same file a little under it is not.
LIMIT = 2**24


def test_a_member_is_counted_as_it_decompresses(tmp_path, zips, monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, str(LIMIT))
    for size, refused in ((LIMIT + 2**20, True), (LIMIT - 2**21, False)):
        path = tmp_path / "model.zip"
        path.write_bytes(zip_with_a_bomb(zips["trpo"], "extra.txt", size))
        if refused:
            with pytest.raises(ValueError, match=r"its member 'extra.txt', decompressed to \d+ bytes so far, needs"):
                TRPO.load(path)
        else:
            TRPO.load(path)


def test_the_sizes_a_directory_declares_are_not_believed(tmp_path, zips):
    path = tmp_path / "model.zip"
    path.write_bytes(declaring(zips["trpo"], "policy.pth", 0xFFFFFFF0))
    TRPO.load(path)  # zipfile reads what the member holds
    path.write_bytes(declaring(edited(zips["trpo"], with_values(policy_kwargs={"net_arch": [256, 256]})), "policy.pth", 2**31))
    held = len(zipfile.ZipFile(io.BytesIO(zips["trpo"])).read("policy.pth"))
    with pytest.raises(ValueError, match=rf"holds \d+ bytes of parameters, its policy.pth only {held}"):
        TRPO.load(path)


def test_the_data_json_is_counted_at_64_bytes_a_byte(tmp_path, zips, monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, str(64 * 2**20))
    for size, refused in ((2**20 + 2**18, True), (2**20 - 2**18, False)):
        path = tmp_path / "model.zip"
        path.write_bytes(data_padded_to(zips["trpo"], size))
        if refused:
            with pytest.raises(ValueError, match=r"its 'data' entry, parsed needs"):
                TRPO.load(path)
        else:
            TRPO.load(path)


def test_a_box_is_counted_at_four_copies_and_two_masks_an_element(monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, str(LIMIT))
    fits = LIMIT // (4 * 8 + 2)
    assert rebuild_space(box([fits]), "observation_space").shape == (fits,)
    with pytest.raises(LoadLimitError, match=r"observation_space \(a space\) needs"):
        rebuild_space(box([fits + 1]), "observation_space")
    half = {"space": "Dict", "spaces": {"a": box([fits // 2 + 1]), "b": box([fits // 2 + 1])}}
    with pytest.raises(LoadLimitError):  # a Dict is counted whole, before any member is built
        rebuild_space(half, "observation_space")


def test_the_rollout_buffer_is_counted_with_its_copies(tmp_path, zips, monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, str(LIMIT))
    per_step = 8 * (4 + 3 + 6)  # float32 twice (the buffer and get()'s copy): observation 4, action 3, 6 scalars
    for n_steps, refused in ((LIMIT // per_step + 1, True), ((LIMIT - 2**20) // per_step, False)):
        path = tmp_path / "model.zip"
        path.write_bytes(edited(zips["trpo"], with_values(n_steps=n_steps)))
        if refused:
            with pytest.raises(ValueError, match=rf"its rollout buffer \({n_steps} steps x 1 environments\) needs"):
                TRPO.load(path)
        else:
            assert TRPO.load(path).rollout_buffer.buffer_size == n_steps


def test_masks_and_lstm_states_are_counted(tmp_path, zips, monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, str(LIMIT))
    masked = 8 * (4 + 3 + 6 + 3)  # Discrete(3): one-hot 3, mask 3
    path = tmp_path / "model.zip"
    path.write_bytes(edited(zips["maskable"], with_values(n_steps=LIMIT // masked + 1)))
    with pytest.raises(ValueError, match="its rollout buffer"):
        MaskableTRPO.load(path)
    lstm = 8 * (4 * 256)  # hidden and cell states of the actor and the critic, one layer of 256 (per step and env)
    n_envs = LIMIT // (32 * lstm) + 1
    path.write_bytes(edited(zips["recurrent"], with_values(n_envs=n_envs)))
    with pytest.raises(ValueError, match=rf"its rollout buffer \(32 steps x {n_envs} environments\)"):
        RecurrentTRPO.load(path)


def test_the_policy_must_fit_its_file(tmp_path, zips):
    path = tmp_path / "model.zip"
    path.write_bytes(edited(zips["trpo"], with_values(policy_kwargs={"net_arch": [4096]})))  # 0.2 MB of parameters
    with pytest.raises(ValueError, match=r"holds \d+ bytes of parameters, its policy.pth only \d+"):
        TRPO.load(path)


def test_a_frame_stack_is_counted(monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, str(LIMIT))
    venv = DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["discrete"])])  # 4 float32 a frame
    fits = LIMIT // (2 * 4 * 4)
    assert _bounded_frame_stack(venv, fits).observation_space.shape == (4 * fits,)
    with pytest.raises(LoadLimitError, match=rf"the config's frame stack of {fits + 1} \(frame_stack, n_stack\) needs"):
        _bounded_frame_stack(venv, fits + 1)


def test_yaml_aliases_at_the_limit(tmp_path):
    def aliased(levels):  # a list of 2**levels items through aliases: 2**(levels + 1) - 1 nodes and the mapping's 3
        return "a0: &a0 [x, x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n" for i in range(1, levels))

    (tmp_path / "under.yml").write_text(aliased(13))  # about 2**15 nodes, under the documented 2**16
    assert len(read_zoo_yaml(tmp_path / "under.yml")) == 13
    (tmp_path / "over.yml").write_text(aliased(15))  # about 2**17
    with pytest.raises(UnsafeFileError, match=r"over.yml: its aliases expand it past 65536 nodes"):
        read_zoo_yaml(tmp_path / "over.yml")


@pytest.mark.parametrize(
    "where,env_kwargs",
    [("args.yml", {"xml_file": "./rl-trained-agents/evil.xml"}), ("config.yml", {"xml_file": "/etc/passwd"}),
     ("args.yml", {"model_path": "~/x"}), ("config.yml", {"xml_file": "..\\evil.xml"})],
)  # fmt: skip
def test_env_kwargs_from_a_file_name_no_place(tmp_path, where, env_kwargs):
    (tmp_path / where).write_text(yaml.safe_dump({"env_kwargs": env_kwargs}))
    with pytest.raises(UnsafeFileError, match=rf"{where}: env_kwargs\['\w+'\] is .*, a path; a file may not name places"):
        check_saved_config(tmp_path)
    (tmp_path / where).write_text(yaml.safe_dump({"env_kwargs": {"xml_file": "hopper.xml", "frame_skip": 4}}))
    check_saved_config(tmp_path)  # a bare name is the environment's own asset


def test_normalize_settings_of_a_conf_file_are_checked(tmp_path):
    for normalize in ("dict(norm_obs=True, clip_obs=1e-300)", {"norm_obs": True, "epsilon": 0.0}):
        conf = conf_file(tmp_path, {"normalize": normalize})
        with pytest.raises(UnsafeFileError, match=r"normalize: (clip_obs|epsilon) must be a number in"):
            check_config_entry(["--env", "CartPole-v1", "--conf-file", conf])


def test_gsde_injected_into_a_zip_is_counted(tmp_path, monkeypatch):
    model = TRPO("MlpPolicy", DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box3"])]), **SMALL)
    honest = zip_of(model)
    path = tmp_path / "model.zip"
    path.write_bytes(edited(honest, with_values(use_sde="yes")))
    with pytest.raises(ValueError, match="use_sde must be True or False"):
        TRPO.load(path)
    monkeypatch.setenv(LIMIT_VARIABLE, str(2**20))
    sde = zip_of(TRPO("MlpPolicy", DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box3"])]), use_sde=True, **SMALL))
    path.write_bytes(edited(sde, with_values(n_envs=2**14)))
    with pytest.raises(ValueError, match="its gSDE noise needs"):
        TRPO.load(path)


@pytest.mark.parametrize("name,value", [("gamma", float("nan")), ("gae_lambda", 1.5), ("sde_sample_freq", 0.5)])
def test_hyperparameters_a_zip_holds_are_checked(tmp_path, zips, name, value):
    path = tmp_path / "model.zip"
    path.write_bytes(edited(zips["trpo"], with_values(**{name: value})))
    with pytest.raises(ValueError, match=f"{name} must be"):
        TRPO.load(path)


def test_a_conf_file_asking_for_many_environments_is_refused(tmp_path):
    conf = conf_file(tmp_path, {"n_envs": 1_000_000})
    with pytest.raises(UnsafeFileError, match="n_envs is 1000000; a file gives a positive integer of at most 1024"):
        check_config_entry(["--env", "CartPole-v1", "--conf-file", conf])


# --- 6. VecNormalize statistics are checked ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value,named",
    [
        ("mean", float("nan"), r"obs_rms.mean must be finite"),
        ("var", -1.0, r"obs_rms.var must be >= 0"),
        ("mean", float("inf"), r"obs_rms.mean must be finite"),
        ("clip_obs", -1.0, r"clip_obs must be a number in \[1.17549e-38, 3.40282e\+38\], got -1.0"),
        ("epsilon", 0.0, r"epsilon must be a number in \[1.17549e-38, 1\], got 0.0"),
        ("clip_reward", 0.0, r"clip_reward must be a number in"),  # variants from here
        ("var", float("inf"), r"obs_rms.var must be finite"),
        ("gamma", 1.5, r"gamma must be a number in \[0, 1\]"),
        ("count", 0.0, r"obs_rms.count must be a positive number"),
        ("mean", 1e300, r"obs_rms.mean must lie within float32's range"),  # finite, but inf once float32
        ("var", 1e300, r"obs_rms.var must lie within float32's range"),  # every observation rounds to 0
        ("clip_obs", 1e-300, r"clip_obs must be a number in"),
        ("epsilon", 1e-300, r"epsilon must be a number in"),
    ],
)
def test_vec_normalize_statistics_that_would_be_silently_wrong_are_refused(tmp_path, field, value, named):
    make = lambda: DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box1"])])  # noqa: E731
    venv = VecNormalize(make())
    if field in ("mean", "var", "count"):
        rms = venv.obs_rms
        if field == "count":
            rms.count = value
        else:
            getattr(rms, field)[1] = value
    else:
        setattr(venv, field, value)
    save_vec_normalize(venv, tmp_path / "stats.json")
    with pytest.raises(ValueError, match=f"stats.json: {named}"):
        load_vec_normalize(tmp_path / "stats.json", make())


# --- the checks themselves: each fails its test when weakened (tests/mutations.py) ------------------------------------


class _WritesMarker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (Path(self.path),)


@pytest.mark.parametrize("member", ["policy.pth", "policy.optimizer.pth", "pytorch_variables.pth", "other.pth"])
def test_check_tensors_reads_every_tensor_file_without_unpickling(tmp_path, zips, member):
    buffer = io.BytesIO()
    th.save({"weight": _WritesMarker(tmp_path / "marker")}, buffer)
    path = tmp_path / "model.zip"
    path.write_bytes(edited(zips["trpo"], members={member: buffer.getvalue()}))
    with pytest.raises(__import__("pickle").UnpicklingError):
        check_tensors(path)
    assert not (tmp_path / "marker").exists()


def test_a_python_name_tag_is_refused(tmp_path):
    (tmp_path / "config.yml").write_text("n_steps: !!python/name:os.system\n")
    with pytest.raises(UnsafeFileError, match=r"could not determine a constructor.*python/name:os.system"):
        check_saved_config(tmp_path)


@pytest.mark.parametrize("key", ["policy_kwargs", "normalize", "env_kwargs", "monitor_kwargs", "replay_buffer_kwargs"])
def test_every_text_key_of_a_saved_config_is_parsed(tmp_path, key):
    (tmp_path / "config.yml").write_text(yaml.safe_dump({key: "dict(a=open(file='marker', mode='w'))"}))
    with pytest.raises(UnsafeFileError, match=rf"config.yml: {key}: \"open"):
        check_saved_config(tmp_path)


@pytest.mark.skipif(not hasattr(sb3_utils, "LinearSchedule"), reason="SB3 before 2.6 saves schedules as functions")
def test_a_printed_schedule_of_a_foreign_zip_is_rebuilt_with_its_own_numbers(tmp_path):
    env = DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box3"])])
    PPO("MlpPolicy", env, n_steps=32, batch_size=32, clip_range=sb3_utils.LinearSchedule(0.3, 0.1, 1.0)).save(tmp_path / "ppo")
    loaded = PPO.load(tmp_path / "ppo", custom_objects=custom_objects_without_pickle(tmp_path / "ppo.zip", PPO))
    assert np.allclose([loaded.clip_range(1.0), loaded.clip_range(0.5), loaded.clip_range(0.0)], [0.3, 0.2, 0.1])


def test_a_file_does_not_choose_where_logs_are_written(tmp_path, zips):
    path = tmp_path / "model.zip"
    path.write_bytes(edited(zips["trpo"], with_values(tensorboard_log=str(tmp_path / "outside"))))
    with pytest.warns(UserWarning, match="the file's tensorboard_log .* is not used"):
        assert TRPO.load(path).tensorboard_log is None
    assert TRPO.load(path, tensorboard_log=str(tmp_path / "mine")).tensorboard_log == str(tmp_path / "mine")


@needs_zoo
def test_every_allowed_config_class_exists_and_takes_what_is_allowed():
    import inspect

    from sb3_trpo_ext.safe_loading.allowlist import CONFIG_CLASSES, config_class

    for key, classes in CONFIG_CLASSES.items():
        for name, arguments in classes.items():
            cls = config_class(key, name, {}, "test")
            parameters = inspect.signature(cls.__init__).parameters
            assert set(arguments) <= set(parameters), (name, set(arguments) - set(parameters))
            assert not any(word in argument for argument in arguments for word in ("file", "folder", "path", "dir"))


def test_zips_of_the_maskable_image_kind_load(zips):
    assert MaskableTRPO.load(io.BytesIO(zips["maskable_image"])).observation_space.shape == (1, 36, 36)


def test_the_crafted_files_are_what_they_say(zips):
    data = json.loads(zipfile.ZipFile(io.BytesIO(edited(zips["trpo"], with_space("action_space", box([5]))))).read("data"))
    assert data["action_space"][":plain:"]["shape"] == [5]
    lying = zipfile.ZipFile(io.BytesIO(declaring(zips["trpo"], "policy.pth", 0xFFFFFFF0)))
    assert lying.getinfo("policy.pth").file_size == 0xFFFFFFF0


# --- the fuzz: these shapes, drawn ------------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=max(200, settings.default.max_examples // 2),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
TEMPTING = ["rl_zoo3.benchmark", "evil_env", "os", "subprocess", "__main__", "rl-trained-agents.x.evil", "gymnasium"]
env_ids = (
    st.builds(lambda module, name: f"{module}:{name}", st.sampled_from(TEMPTING), st.sampled_from(["CartPole-v1", "x"]))
    | st.sampled_from(["CartPole-v1", "Pendulum-v1", "evil/Env-v0", "CartPole-v1:", ":CartPole-v1"])
    | st.text(max_size=30)
    | plain_values
)


@FUZZ
@given(env=env_ids)
def test_fuzzed_env_ids_import_nothing(importable, zips, env):
    (importable / "evil_env.py").write_text(MARKER_MODULE)
    path = importable / "model.zip"
    path.write_bytes(edited(zips["trpo"], with_values(env=env)))
    try:
        TRPO.load(path)
        assert env is None
    except UnsafeFileError:
        assert env is not None
    assert not (importable / "marker").exists() and "rl_zoo3.benchmark" not in sys.modules and "evil_env" not in sys.modules


names = {key: st.sampled_from(sorted(classes)) for key, classes in CONFIG_CLASSES.items()}
config_names = st.sampled_from(CLASS_KEYS).flatmap(
    lambda key: st.tuples(
        st.just(key),
        names.get(key, st.just("x.Y"))
        | names.get(key, st.just("x.Y")).map(lambda name: name + "X")
        | names.get(key, st.just("x.Y")).map(lambda name: name.split(".")[0] + "_evil.Evil")
        | names.get(key, st.just("x.Y")).map(lambda name: name.rpartition(".")[0] + ".Evil")
        | st.text(max_size=20),
        st.dictionaries(
            st.sampled_from(["filename", "video_folder", "save_path", "max_episode_steps", "horizon", "n_stack", "skip"])
            | st.text(max_size=8),
            plain_values,
            max_size=3,
        ),
    )
)


@needs_zoo
@FUZZ
@given(drawn=config_names)
def test_fuzzed_config_classes_are_allowed_exactly(importable, drawn):
    key, name, kwargs = drawn
    (importable / "stable_baselines3_evil.py").write_text(MARKER_MODULE + "class Evil: pass\n")
    (importable / "config.yml").write_text(yaml.safe_dump({key: [{name: kwargs}]}))
    allowed = CONFIG_CLASSES.get(key, {}).get(name)
    try:
        check_saved_config(importable)
        assert allowed is not None and set(kwargs) <= set(allowed)
    except UnsafeFileError:
        pass
    assert not (importable / "marker").exists() and "stable_baselines3_evil" not in sys.modules


sizes = st.integers(1, 2**40) | st.integers(1, 2**16)


@FUZZ
@given(n_steps=sizes, n_envs=sizes, shape=st.lists(st.integers(0, 2**20), min_size=1, max_size=3))
def test_fuzzed_sizes_load_only_within_the_limit(zips, monkeypatch, n_steps, n_envs, shape):
    import resource

    monkeypatch.setenv(LIMIT_VARIABLE, str(LIMIT))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    crafted = edited(zips["trpo"], lambda data: (with_values(n_steps=n_steps, n_envs=n_envs)(data), with_space(
        "observation_space", box(shape, "float32"))(data)))  # fmt: skip
    try:
        TRPO.load(io.BytesIO(crafted))
    except ValueError as error:
        assert len(str(error).splitlines()) == 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


@FUZZ
@given(levels=st.integers(1, 40), width=st.integers(1, 4), key=st.sampled_from(["env_wrapper", "normalize", "n_envs"]))
def test_fuzzed_yaml_aliases_are_bounded(tmp_path_factory, levels, width, key):
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    path = tmp_path_factory.mktemp("yaml") / "config.yml"
    path.write_text("\n".join([*lines, f"{key}: *a{levels - 1}"]) + "\n")
    try:
        read_zoo_yaml(path)
        assert sum(width**i for i in range(levels)) * 3 < 2**17  # what was read was small
    except UnsafeFileError as error:
        assert "aliases expand it past" in str(error)


numbers = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, -1.0, 1e-300, 1.0])


@FUZZ
@given(clip_obs=numbers, clip_reward=numbers, epsilon=numbers, gamma=numbers, mean=numbers, var=numbers, count=numbers)
def test_fuzzed_vec_normalize_values_load_only_when_they_normalise(tmp_path_factory, **values):
    folder = tmp_path_factory.mktemp("stats")
    make = lambda: DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box1"])])  # noqa: E731
    venv = VecNormalize(make())
    for name in ("clip_obs", "clip_reward", "epsilon", "gamma"):
        setattr(venv, name, values[name])
    venv.obs_rms.mean[0], venv.obs_rms.var[0], venv.obs_rms.count = values["mean"], values["var"], values["count"]
    save_vec_normalize(venv, folder / "stats.json")
    try:
        loaded = load_vec_normalize(folder / "stats.json", make())
    except ValueError:
        return
    normalized = loaded.normalize_obs(np.ones((1, 4), dtype=np.float32))
    assert np.all(np.isfinite(normalized)) and np.all(np.abs(normalized) <= loaded.clip_obs)
