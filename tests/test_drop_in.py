"""What SB3 and sb3-contrib users expect of an on-policy algorithm: foreign zips refused, BatchNorm and Dropout
extractors, SB3's own judgement of malformed optimiser states, and SB3's minibatch warning."""

import io
import json
import warnings
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import sb3_contrib
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.safe_loading import UnsafeFileError

SMALL = dict(n_steps=64, batch_size=32, n_critic_updates=2, seed=0)


def test_a_zip_of_another_algorithm_is_refused(tmp_path):
    # A numeric target_kl, which TRPO's checks would take: the zip itself must be recognised as another algorithm's.
    PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, target_kl=0.02).save(tmp_path / "ppo")
    with pytest.raises(ValueError, match=r"Could not load a TRPO model .*saved by another algorithm .*cg_damping"):
        TRPO.load(tmp_path / "ppo")
    # The same refusal for a file object, which is left where BaseAlgorithm.load expects it.
    with open(tmp_path / "ppo.zip", "rb") as file, pytest.raises(ValueError, match="saved by another algorithm"):
        TRPO.load(file)


def test_zips_of_either_trpo_load_from_paths_and_file_objects(tmp_path):
    sb3_contrib.TRPO("MlpPolicy", "CartPole-v1", **SMALL).save(tmp_path / "contrib")
    TRPO("MlpPolicy", "CartPole-v1", **SMALL).save(tmp_path / "ours")
    for name in ("contrib", "ours"):
        assert isinstance(TRPO.load(tmp_path / name), TRPO)  # without the .zip suffix, as SB3 allows
        buffer = io.BytesIO((tmp_path / f"{name}.zip").read_bytes())
        assert isinstance(TRPO.load(buffer), TRPO)


def edited(source, target, **changes):
    """A copy of a model zip with some saved hyperparameters replaced, as a hand edit would."""
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(entries["data"])
    data.update(changes)
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return target


@pytest.mark.parametrize(
    "name, value", [("target_kl", None), ("target_kl", -0.1), ("cg_max_steps", 0), ("line_search_shrinking_factor", 1.5)]
)
def test_loaded_hyperparameters_are_validated_as_the_constructor_validates_them(tmp_path, name, value):
    TRPO("MlpPolicy", "CartPole-v1", **SMALL).save(tmp_path / "model.zip")
    with pytest.raises(ValueError) as constructor_error:
        TRPO("MlpPolicy", "CartPole-v1", **{**SMALL, name: value})
    with pytest.raises(ValueError) as load_error:
        TRPO.load(edited(tmp_path / "model.zip", tmp_path / "edited.zip", **{name: value}))
    assert str(load_error.value) == str(constructor_error.value)


class BatchNormDropoutExtractor(BaseFeaturesExtractor):
    """Features through BatchNorm and Dropout, as SB3's own tests of training and evaluation modes build them."""

    def __init__(self, observation_space: gym.spaces.Box):
        super().__init__(observation_space, int(np.prod(observation_space.shape)))
        self.batch_norm = nn.BatchNorm1d(self.features_dim)
        self.dropout = nn.Dropout(0.5)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.dropout(self.batch_norm(observations.flatten(1)))


def batch_norm(model):
    return model.policy.features_extractor.batch_norm


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_batch_norm_and_dropout_extractors_build_train_save_and_load(tmp_path, env_id):
    model = TRPO("MlpPolicy", env_id, policy_kwargs=dict(features_extractor_class=BatchNormDropoutExtractor), **SMALL)
    # Building the model moved no running statistic.
    assert int(batch_norm(model).num_batches_tracked) == 0
    assert th.equal(batch_norm(model).running_mean, th.zeros_like(batch_norm(model).running_mean))

    seen_modes = []
    rollout, train = model.collect_rollouts, model.train

    def observed_rollout(*args, **kwargs):
        before = int(batch_norm(model).num_batches_tracked)
        result = rollout(*args, **kwargs)
        seen_modes.append(("rollout", model.policy.training, int(batch_norm(model).num_batches_tracked) - before))
        return result

    def observed_train():
        before = int(batch_norm(model).num_batches_tracked)
        train()
        seen_modes.append(("train", model.policy.training, int(batch_norm(model).num_batches_tracked) - before))

    model.collect_rollouts, model.train = observed_rollout, observed_train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # dropout may make a line search fail; that is counted
        model.learn(3 * 64)
    del model.collect_rollouts, model.train
    # Evaluation mode in rollouts (statistics untouched), training mode in the update (statistics move).
    assert [(phase, training) for phase, training, _ in seen_modes[:2]] == [("rollout", False), ("train", True)]
    assert all(moved == 0 for phase, _, moved in seen_modes if phase == "rollout")
    assert all(moved > 0 for phase, _, moved in seen_modes if phase == "train")
    assert all(th.isfinite(p).all() for p in model.policy.parameters())

    obs = np.stack([model.observation_space.sample() for _ in range(8)])
    tracked = int(batch_norm(model).num_batches_tracked)
    actions = model.predict(obs, deterministic=True)[0]
    assert int(batch_norm(model).num_batches_tracked) == tracked  # predict runs in evaluation mode
    with pytest.warns(UserWarning, match=r"policy_kwargs\['features_extractor_class'\].*custom_objects"):
        model.save(tmp_path / "model")  # a class of the user's own: only the user can say it is safe to build
    with pytest.raises(UnsafeFileError, match=r"BatchNormDropoutExtractor.*custom_objects=\{'policy_kwargs'"):
        TRPO.load(tmp_path / "model")
    loaded = TRPO.load(tmp_path / "model", custom_objects={"policy_kwargs": model.policy_kwargs})
    assert th.equal(batch_norm(loaded).running_mean, batch_norm(model).running_mean)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)


def malformed_optimizer_cases():
    return [{"state": {}}, {"param_groups": [{"lr": 1e-3}]}, "not a state", {"state": {}, "param_groups": []}]


@pytest.mark.parametrize("case", range(4))
def test_malformed_optimizer_states_are_judged_as_sb3_judges_them(case):
    def error_of(algorithm, break_policy):
        model = algorithm("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, seed=0)
        params = model.get_parameters()
        params["policy.optimizer"] = malformed_optimizer_cases()[case]
        if break_policy:  # SB3 loads "policy" first: a policy that does not match is its RuntimeError
            params["policy"] = {key: value[..., :1] for key, value in params["policy"].items()}
        with pytest.raises(Exception) as error:
            model.set_parameters(params)
        return type(error.value), str(error.value)

    for break_policy in (False, True):
        assert error_of(TRPO, break_policy) == error_of(PPO, break_policy)


@pytest.mark.parametrize("n_steps, batch_size, warns", [(64, 48, True), (64, 32, False), (64, 64, False)])
def test_a_short_last_minibatch_is_warned_as_sb3_warns(n_steps, batch_size, warns):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TRPO("MlpPolicy", "CartPole-v1", n_steps=n_steps, batch_size=batch_size)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any("minibatch of 16 samples" in m and "batch_size=48" in m for m in messages) == warns


def test_a_policy_name_of_another_kind_names_the_algorithm_that_takes_it():
    from sb3_trpo_ext import RecurrentTRPO

    with pytest.raises(ValueError, match=r"'MlpPolicy' is not one RecurrentTRPO takes: \['CnnLstmPolicy', 'MlpLstmPolicy'"):
        RecurrentTRPO("MlpPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match=r"'MlpLstmPolicy' is not one TRPO takes: .*\(RecurrentTRPO takes it\)"):
        TRPO("MlpLstmPolicy", "CartPole-v1")
    with pytest.raises(
        ValueError, match=r"'MlpPolicy' is not one RecurrentTRPO takes.*\(MaskableNPG, MaskableTRPO, NPG, TRPO take"
    ):
        RecurrentTRPO("MlpPolicy", "CartPole-v1")


def test_an_unknown_env_id_names_the_closest_registered_one():
    with pytest.raises(ValueError, match=r"^env: unknown task 'CartPol-v1' \(did you mean 'CartPole-v1'\?\)"):
        TRPO("MlpPolicy", "CartPol-v1")


@pytest.mark.parametrize("kept", [0.3, 0.5, 0.75, 0.99])
def test_a_truncated_zip_says_it_is_truncated_or_damaged(kept):
    buffer = io.BytesIO()
    TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64).save(buffer)
    with pytest.raises(ValueError, match="truncated or damaged"):
        TRPO.load(io.BytesIO(buffer.getvalue()[: int(len(buffer.getvalue()) * kept)]))


def test_a_parameter_an_algorithm_does_not_take_names_the_ones_that_do():
    from sb3_trpo_ext import NPG

    with pytest.raises(
        TypeError, match=r"^NPG does not take 'line_search_max_iter'; MaskableTRPO, RecurrentTRPO, TRPO take it$"
    ):
        NPG("MlpPolicy", "CartPole-v1", line_search_max_iter=5)
    with pytest.raises(TypeError, match=r"^TRPO does not take 'target_kll' \(did you mean 'target_kl'\?\)$"):
        TRPO("MlpPolicy", "CartPole-v1", target_kll=0.01)
