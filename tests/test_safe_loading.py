"""
Loading a file never runs code it carries (docs/security.md): crafted files whose payload would write a marker file
are refused or ignored, the marker never written (and, where a test could otherwise pass vacuously, a trusted load of
the same file does write it); every algorithm's zips round-trip through the safe path as they do through pickle; a
fuzz of the loaders ends in their own errors only. Tests that call a loader run with pickle, cloudpickle, eval and
YAML's python tags raising (tests/conftest.py), unless marked ``trusts_pickle``.
"""

import base64
import io
import json
import pathlib
import pickle
import resource
import zipfile
from unittest import mock

import cloudpickle
import numpy as np
import pytest
import sb3_contrib
import torch as th
import yaml
from gymnasium import spaces
from helpers import ACTION_SPACES, MaskedToyEnv, ToyEnv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3 import PPO
from stable_baselines3.common import utils as sb3_utils
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_trpo_ext import NPG, TRPO, MaskableNPG, MaskableTRPO, RecurrentTRPO
from sb3_trpo_ext.safe_loading import (
    UnsafeFileError,
    custom_objects_without_pickle,
    load_vec_normalize,
    save_vec_normalize,
)
from sb3_trpo_ext.safe_loading.allowlist import known_classes
from sb3_trpo_ext.safe_loading.limits import MAX_ELEMENTS
from sb3_trpo_ext.safe_loading.plain import PLAIN, describe, rebuild
from sb3_trpo_ext.zoo.guard import SafeZooDumper, check_saved_config, read_zoo_yaml
from sb3_trpo_ext.zoo.values import UnsafeValueError

SMALL = dict(n_steps=32, batch_size=32, n_critic_updates=1, policy_kwargs=dict(net_arch=[8]), seed=0)


class WritesMarker:
    """Unpickling this writes the marker file: the payload of every crafted file here."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


def payload(marker: pathlib.Path) -> bytes:
    return pickle.dumps(WritesMarker(marker))


def env_maker(algorithm, action_space, observation):
    env_class = MaskedToyEnv if algorithm in (MaskableTRPO, MaskableNPG) else ToyEnv
    return lambda: DummyVecEnv([lambda: env_class(action_space, observation)])


def trained(algorithm=TRPO, action_space=ACTION_SPACES["discrete"], observation="vector", policy="MlpPolicy", **kwargs):
    model = algorithm(policy, env_maker(algorithm, action_space, observation)(), **{**SMALL, **kwargs})
    model.learn(64)
    return model


def zip_bytes(model) -> bytes:
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()


def edited(archive: bytes, edit_data=None, members: dict[str, bytes] | None = None) -> bytes:
    """The zip ``archive`` with its ``data`` passed through ``edit_data`` and ``members`` replaced."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    data = json.loads(source.read("data"))
    if edit_data is not None:
        edit_data(data)
    written = io.BytesIO()
    with zipfile.ZipFile(written, "w") as target:
        for info in source.infolist():
            content = (
                json.dumps(data).encode() if info.filename == "data" else (members or {}).get(info.filename, source.read(info))
            )
            target.writestr(info.filename, content)
    return written.getvalue()


def same_parameters(a, b) -> bool:
    return all(th.equal(x, y) for x, y in zip(a.policy.state_dict().values(), b.policy.state_dict().values(), strict=True))


@pytest.fixture(scope="module")
def trpo_zip() -> bytes:
    return zip_bytes(trained(TRPO, ACTION_SPACES["box3"]))


# --- crafted files -------------------------------------------------------------------------------------------------


def with_payload(marker, key, plain):
    def edit(data):
        data[key] = {
            **data.get(key, {}),
            ":type:": "<class 'gymnasium.spaces.box.Box'>",
            ":serialized:": base64.b64encode(payload(marker)).decode(),
        }
        if not plain:
            data[key].pop(PLAIN, None)
        if key == "evil":
            data[key][":type:"] = "<class 'pathlib.Path'>"

    return edit


@pytest.mark.parametrize(
    "key,plain", [("observation_space", True), ("observation_space", False), ("policy_class", True), ("evil", False)]
)
def test_a_zip_whose_pickled_entry_writes_a_marker_never_writes_it(tmp_path, trpo_zip, key, plain):
    marker = tmp_path / "marker"
    crafted = edited(trpo_zip, with_payload(marker, key, plain))
    reference = TRPO.load(io.BytesIO(trpo_zip))
    if key == "evil":  # an entry the safe path has no way to rebuild: refused by name, with the way out
        with pytest.raises(UnsafeFileError, match=r"evil: a pickled pathlib.Path .*trust_pickle=True"):
            TRPO.load(io.BytesIO(crafted))
    else:  # the payload is never read: the entry is rebuilt from its plain fields
        loaded = TRPO.load(io.BytesIO(crafted))
        assert same_parameters(loaded, reference) and loaded.observation_space == reference.observation_space
    assert not marker.exists()


@pytest.mark.trusts_pickle
def test_the_crafted_zip_writes_its_marker_when_trusted(tmp_path, trpo_zip):
    marker = tmp_path / "marker"
    with pytest.raises(Exception):  # noqa: B017  # the unpickled "space" is None: SB3 fails after the payload ran
        TRPO.load(io.BytesIO(edited(trpo_zip, with_payload(marker, "observation_space", False))), trust_pickle=True)
    assert marker.exists()


def pth_with_payload(marker) -> bytes:
    buffer = io.BytesIO()
    th.save({"mlp_extractor.policy_net.0.weight": WritesMarker(marker)}, buffer)
    return buffer.getvalue()


def test_a_tensor_file_with_a_pickle_payload_is_refused(tmp_path, trpo_zip):
    marker = tmp_path / "marker"
    crafted = edited(trpo_zip, members={"policy.pth": pth_with_payload(marker)})
    refused = "its tensors hold a pickled object that is not a tensor .*getattr"
    with pytest.raises(ValueError, match=f"Could not load a TRPO model .*: {refused}"):
        TRPO.load(io.BytesIO(crafted))
    with pytest.raises(ValueError, match=f"Could not load parameters from .*: {refused}"):
        TRPO("MlpPolicy", "Pendulum-v1").set_parameters(io.BytesIO(crafted))
    assert not marker.exists()


@pytest.mark.trusts_pickle
def test_the_crafted_tensor_file_writes_its_marker_when_unpickled(tmp_path):
    marker = tmp_path / "marker"
    th.load(io.BytesIO(pth_with_payload(marker)), weights_only=False)
    assert marker.exists()


def test_a_zip_declaring_more_than_it_holds_is_refused_before_allocating(trpo_zip):
    def huge_layers(data):
        data["policy_kwargs"] = {"net_arch": [2**20, 2**20]}

    def huge_space(data):
        data["observation_space"][PLAIN].update(shape=[2**40], low=-1.0, high=1.0)

    def huge_buffer(data):
        data["n_steps"] = 2**40

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=r"holds \d+ bytes of parameters, its policy.pth only \d+"):
        TRPO.load(io.BytesIO(edited(trpo_zip, huge_layers)))
    with pytest.raises(ValueError, match=f"more than the {MAX_ELEMENTS} a file may declare"):
        TRPO.load(io.BytesIO(edited(trpo_zip, huge_space)))
    with pytest.raises(ValueError, match=r"n_steps 1099511627776 and n_envs 1 must be integers in \[1, 16777216\]"):
        TRPO.load(io.BytesIO(edited(trpo_zip, huge_buffer)))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing of those sizes made


# --- round trips -----------------------------------------------------------------------------------------------------

ROUND_TRIPS = [
    (TRPO, "box3", "vector", "MlpPolicy"),
    (TRPO, "multidiscrete", "dict", "MultiInputPolicy"),
    (TRPO, "multibinary", "index", "MlpPolicy"),
    (NPG, "discrete", "image", "CnnPolicy"),
    (MaskableTRPO, "multidiscrete", "vector", "MlpPolicy"),
    (MaskableNPG, "discrete", "dict", "MultiInputPolicy"),
    (RecurrentTRPO, "box1", "vector", "MlpLstmPolicy"),
]


@pytest.mark.trusts_pickle  # compares with the pickle path; the safe loads run with unpickling made to raise
@pytest.mark.parametrize("algorithm,action,observation,policy", ROUND_TRIPS)
def test_the_safe_path_gives_the_model_the_pickle_path_gives(algorithm, action, observation, policy):
    extra = (
        dict(policy_kwargs=dict(net_arch=[8], features_extractor_kwargs=dict(features_dim=8))) if policy == "CnnPolicy" else {}
    )
    if algorithm is RecurrentTRPO:
        extra = dict(policy_kwargs=dict(lstm_hidden_size=8, net_arch=[8]), target_kl=th_schedule())
    model = trained(algorithm, ACTION_SPACES[action], observation, policy, **extra)
    archive = zip_bytes(model)
    with mock.patch.object(cloudpickle, "loads", side_effect=AssertionError("unpickled")):
        safe = algorithm.load(io.BytesIO(archive))
    trusted = algorithm.load(io.BytesIO(archive), trust_pickle=True)
    for name in (
        "observation_space",
        "action_space",
        "policy_class",
        "policy_kwargs",
        "rollout_buffer_class",
        "num_timesteps",
    ):
        assert getattr(safe, name) == getattr(trusted, name), name
    assert same_parameters(safe, trusted) and same_parameters(safe, model)
    for key in safe._last_obs if isinstance(safe._last_obs, dict) else [None]:
        pick = (lambda obs, key=key: obs[key]) if key else (lambda obs: obs)
        np.testing.assert_array_equal(pick(safe._last_obs), pick(trusted._last_obs))
    np.testing.assert_array_equal(safe._last_episode_starts, trusted._last_episode_starts)
    assert list(safe.ep_info_buffer) == list(trusted.ep_info_buffer)
    if not callable(model.target_kl):
        assert safe.target_kl == trusted.target_kl
    else:
        assert [safe.target_kl(p) for p in (1.0, 0.3)] == [trusted.target_kl(p) for p in (1.0, 0.3)]
    obs = model.observation_space.sample()
    assert np.array_equal(safe.predict(obs, deterministic=True)[0], trusted.predict(obs, deterministic=True)[0])
    # learn() continues identically: the same seed from the same state gives the same parameters.
    for loaded in (safe, trusted):
        loaded.set_env(env_maker(algorithm, ACTION_SPACES[action], observation)())
        loaded.set_random_seed(5)
        loaded.learn(64, reset_num_timesteps=False)
    assert same_parameters(safe, trusted) and not same_parameters(safe, model)


def th_schedule():
    from stable_baselines3.common import utils

    return utils.LinearSchedule(0.02, 0.0, 1.0) if hasattr(utils, "LinearSchedule") else 0.02


@pytest.mark.trusts_pickle
def test_sb3_contrib_and_ppo_zips_load_without_pickle_as_with_it(tmp_path):
    for algorithm, target in ((sb3_contrib.TRPO, TRPO), (sb3_contrib.TRPO, sb3_contrib.TRPO), (PPO, PPO)):
        model = algorithm("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, seed=0)
        model.learn(64)
        model.save(tmp_path / "model")
        with mock.patch.object(cloudpickle, "loads", side_effect=AssertionError("unpickled")):
            if target is TRPO:
                safe = TRPO.load(tmp_path / "model")
            else:  # PPO's clip_range is a function before stable-baselines3 2.6 (no plain form): the caller gives it
                given = {} if hasattr(sb3_utils, "FloatSchedule") else {"clip_range": 0.2}
                objects = custom_objects_without_pickle(tmp_path / "model", target, given)
                safe = target.load(tmp_path / "model", custom_objects=objects)
        trusted = TRPO.load(tmp_path / "model", trust_pickle=True) if target is TRPO else target.load(tmp_path / "model")
        assert safe.observation_space == trusted.observation_space and safe.action_space == trusted.action_space
        assert safe.policy_class is trusted.policy_class
        assert same_parameters(safe, trusted)
        obs = model.observation_space.sample()
        assert np.array_equal(safe.predict(obs, deterministic=True)[0], trusted.predict(obs, deterministic=True)[0])


def test_descriptions_rebuild_equal_values():
    classes = known_classes()
    values = {
        "box": spaces.Box(np.array([-1.5, -np.inf], np.float32), np.array([0.25, np.inf], np.float32)),
        "discrete": spaces.Discrete(7, start=-2),
        "multidiscrete": spaces.MultiDiscrete([[2, 3], [4, 5]]),
        "multibinary": spaces.MultiBinary([2, 3]),
        "dict": spaces.Dict({"a": spaces.Box(0, 255, (3, 4), np.uint8), "b": spaces.Discrete(3)}),
        "array": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        "kwargs": {"net_arch": {"pi": [64], "vf": [32]}, "activation_fn": th.nn.ReLU, "optimizer_class": th.optim.RMSprop},
    }
    for name, value in values.items():
        rebuilt = rebuild(json.loads(json.dumps(describe(value, name, classes))), classes, name)
        if isinstance(value, np.ndarray):
            assert rebuilt.dtype == value.dtype and np.array_equal(rebuilt, value)
        else:
            assert rebuilt == value, name


def test_save_warns_of_what_only_a_trusted_load_restores():
    class OwnActivation(th.nn.ReLU):
        pass

    model = TRPO(
        "MlpPolicy",
        DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["discrete"])]),
        **{**SMALL, "policy_kwargs": dict(activation_fn=OwnActivation)},
    )
    with pytest.warns(
        UserWarning, match=r"policy_kwargs\['activation_fn'\] \(test_safe_loading.*OwnActivation\) has no plain form"
    ):
        zip_bytes(model)


# --- VecNormalize statistics -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("observation", ["vector", "dict"])
def test_vec_normalize_statistics_round_trip_as_json(tmp_path, observation):
    venv = VecNormalize(
        DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box1"], observation)]),
        gamma=0.9,
        clip_obs=5.0,
        **({"norm_obs_keys": ["vector"]} if observation == "dict" else {}),
    )
    venv.reset()
    for _ in range(40):
        venv.step(np.array([venv.action_space.sample()]))
    save_vec_normalize(venv, tmp_path / "stats.json")
    loaded = load_vec_normalize(tmp_path / "stats.json", DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box1"], observation)]))
    for name in ("gamma", "clip_obs", "clip_reward", "epsilon", "norm_obs", "norm_reward", "training"):
        assert getattr(loaded, name) == getattr(venv, name), name
    pairs = (
        [(loaded.obs_rms, venv.obs_rms)] if observation == "vector" else [(loaded.obs_rms["vector"], venv.obs_rms["vector"])]
    )
    for new, old in [*pairs, (loaded.ret_rms, venv.ret_rms)]:
        assert np.array_equal(new.mean, old.mean) and np.array_equal(new.var, old.var) and new.count == old.count
    obs = venv.observation_space.sample()
    batch = {k: v[None] for k, v in obs.items()} if isinstance(obs, dict) else obs[None]
    result, expected = loaded.normalize_obs(batch), venv.normalize_obs(batch)
    if isinstance(result, dict):
        result, expected = result["vector"], expected["vector"]
    assert np.array_equal(result, expected)
    if observation == "vector":
        with pytest.raises(ValueError, match=r"obs_rms.mean must be a float array of shape \(2,\)"):
            load_vec_normalize(tmp_path / "stats.json", DummyVecEnv([_Box2Env]))


class _Box2Env(ToyEnv):
    def __init__(self):
        super().__init__(ACTION_SPACES["box1"])
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)


def test_a_vec_normalize_pickle_is_refused_without_trust(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "vecnormalize.pkl").write_bytes(payload(marker))
    with pytest.raises(UnsafeFileError, match=r"vecnormalize.pkl: VecNormalize statistics as a pickle.*trust_pickle=True"):
        load_vec_normalize(tmp_path / "vecnormalize.pkl", DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box1"])]))
    assert not marker.exists()


@pytest.mark.trusts_pickle
def test_the_vec_normalize_pickle_writes_its_marker_when_trusted(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "vecnormalize.pkl").write_bytes(payload(marker))
    with pytest.raises(Exception):  # noqa: B017  # not a VecNormalize: SB3 fails after the payload ran
        load_vec_normalize(
            tmp_path / "vecnormalize.pkl", DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box1"])]), trust_pickle=True
        )
    assert marker.exists()


# --- saved zoo configs -----------------------------------------------------------------------------------------------

SAVED_CONFIG = {
    "n_steps": 64,
    "normalize": "dict(norm_obs=True, norm_reward=False)",
    "policy": "MlpPolicy",
    "policy_kwargs": "dict(net_arch=[8], activation_fn=nn.Tanh)",
    "n_timesteps": 1000,
}


def escapes(marker):
    command = f"__import__('pathlib').Path('{marker}').touch()"
    return [
        ("normalize", command, "__import__"),
        ("policy_kwargs", f"dict(net_arch={command})", "__import__"),
        ("policy_kwargs", "dict(net_arch=().__class__.__mro__[1].__subclasses__())", "__subclasses__"),
        ("normalize", "nn.Module.__subclasses__()", "__subclasses__"),
        ("env_wrapper", "pathlib.Path.touch", "'pathlib.Path.touch', not a class a file may name there"),
        ("env_wrapper", [{"subprocess.Popen": {"args": f"touch {marker}", "shell": True}}], "'subprocess.Popen', not a"),
        ("callback", "gymnasium.wrappers.TimeLimit.__init__", "'gymnasium.wrappers.TimeLimit.__init__', not a class"),
        ("vec_env_wrapper", "stable_baselines3.common.vec_env.sync_envs_normalization", "sync_envs_normalization', not a"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_a_saved_config_with_an_escape_is_refused_naming_it(tmp_path, case):
    marker = tmp_path / "marker"
    key, value, named = escapes(marker)[case]
    (tmp_path / "config.yml").write_text(yaml.dump({**SAVED_CONFIG, key: value}, Dumper=SafeZooDumper))
    with pytest.raises(UnsafeFileError, match=f"config.yml: {key}.*{named}"):
        check_saved_config(tmp_path)
    assert not marker.exists()


def test_a_saved_config_with_a_python_tag_is_refused(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "config.yml").write_text(
        f"n_steps: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]\n"
    )
    with pytest.raises(
        UnsafeValueError, match=r"could not determine a constructor.*python/object/apply:pathlib.Path.touch.*line 1"
    ):
        check_saved_config(tmp_path)
    assert not marker.exists()


def test_rl_zoo3s_ordered_dicts_and_tuples_are_read_from_plain_data(tmp_path):
    from collections import OrderedDict

    written = OrderedDict([("b", (1, 2)), ("a", [OrderedDict([("x", 1)])])])
    (tmp_path / "args.yml").write_text(yaml.dump(written))  # as rl_zoo3 writes it: python/ tags
    assert read_zoo_yaml(tmp_path / "args.yml") == written
    (tmp_path / "plain.yml").write_text(yaml.dump(written, Dumper=SafeZooDumper))
    assert "!!python/object" not in (tmp_path / "plain.yml").read_text()
    assert read_zoo_yaml(tmp_path / "plain.yml") == written


@pytest.mark.trusts_pickle
def test_rl_zoo3_itself_runs_the_escape(tmp_path):
    marker = tmp_path / "marker"
    key, value, _ = escapes(marker)[0]
    (tmp_path / "config.yml").write_text(yaml.dump({**SAVED_CONFIG, key: value}))
    get_saved_hyperparams = pytest.importorskip("rl_zoo3.utils").get_saved_hyperparams

    get_saved_hyperparams(str(tmp_path))
    assert marker.exists()


# --- the fuzz ---------------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FUZZ = settings(
    max_examples=max(1000, settings.default.max_examples),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def ends_in_its_own_error(load, archive):
    try:
        load(archive)
    except ValueError as error:  # UnsafeFileError, HyperparameterError, "Could not load ..." are ValueErrors
        assert str(error)


@pytest.fixture(scope="module")
def fuzz_zip() -> bytes:
    return zip_bytes(trained(TRPO, ACTION_SPACES["box1"], policy_kwargs=dict(net_arch=[4])))


def plain_paths(data, prefix=()):
    """Every (path, value) inside the plain descriptions of ``data``."""
    found = []

    def walk(value, path):
        found.append((path, value))
        if isinstance(value, dict):
            for name, item in value.items():
                walk(item, (*path, name))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, (*path, index))

    for key, entry in data.items():
        walk(entry, (key,))
    return found


@FUZZ
@given(st.data())
def test_fuzzed_zips_end_in_the_loaders_own_errors(fuzz_zip, data):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mutation = data.draw(st.sampled_from(["truncate", "flip", "field", "plain"]))
    archive = bytearray(fuzz_zip)
    if mutation == "truncate":
        archive = archive[: data.draw(st.integers(0, len(archive) - 1))]
    elif mutation == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            position = data.draw(st.integers(0, len(archive) - 1))
            archive[position] ^= 1 << data.draw(st.integers(0, 7))
    else:
        source = json.loads(zipfile.ZipFile(io.BytesIO(fuzz_zip)).read("data"))
        paths = [path for path, _ in plain_paths(source) if (PLAIN in path if mutation == "plain" else len(path) == 1)]
        path = data.draw(st.sampled_from(paths))
        replacement = data.draw(json_values | st.lists(st.integers(0, 2**40), min_size=1, max_size=4))

        def edit(parsed, path=path, replacement=replacement):
            target = parsed
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = replacement

        archive = bytearray(edited(fuzz_zip, edit))
    ends_in_its_own_error(lambda raw: TRPO.load(io.BytesIO(bytes(raw))), archive)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB


@FUZZ
@given(st.data())
def test_fuzzed_vec_normalize_statistics_end_in_the_loaders_own_error(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("stats")
    venv = VecNormalize(DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box1"])]))
    save_vec_normalize(venv, folder / "stats.json")
    state = json.loads((folder / "stats.json").read_text())
    path = data.draw(st.sampled_from([path for path, _ in plain_paths(state) if path]))
    target = state
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = data.draw(json_values | st.lists(st.integers(0, 2**40), min_size=1, max_size=4))
    (folder / "stats.json").write_text(json.dumps(state))
    ends_in_its_own_error(
        lambda file: load_vec_normalize(file, DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box1"])])), folder / "stats.json"
    )


@FUZZ
@given(st.text(max_size=300) | st.builds(lambda v: yaml.dump(v), json_values))
def test_fuzzed_saved_configs_end_in_the_readers_own_error(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("config")
    (folder / "config.yml").write_text(text)
    ends_in_its_own_error(check_saved_config, folder)


def test_descriptions_name_only_known_classes_and_build_only_schedules_of_numbers():
    classes = known_classes()
    with pytest.raises(UnsafeFileError, match=r"policy_class: the class subprocess.Popen is not one this package rebuilds"):
        rebuild({"kind": "class", "name": "subprocess.Popen"}, classes, "policy_class")
    with pytest.raises(UnsafeFileError, match=r"an object of os.PathLike is not one this package rebuilds"):
        rebuild({"kind": "object", "class": "os.PathLike", "fields": {}}, classes, "lr")
    calls_a_class = {"value_schedule": {"kind": "class", "name": "torch.nn.modules.activation.ReLU"}}
    with pytest.raises(ValueError, match="a schedule holds numbers and schedules only"):
        rebuild(
            {"kind": "object", "class": "stable_baselines3.common.utils.FloatSchedule", "fields": calls_a_class}, classes, "lr"
        )
