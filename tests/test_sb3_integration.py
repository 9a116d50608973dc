"""TRPO as a drop-in Stable-Baselines3 algorithm."""

import copy
import csv
import math

import gymnasium as gym
import numpy as np
import pytest
import sb3_contrib
import torch as th
from helpers import ACTION_SPACES, StopAfter, ToyEnv
from stable_baselines3.common import utils as sb3_utils
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack, VecNormalize

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.safe_loading import UnsafeFileError

SMALL = dict(n_steps=64, batch_size=32, n_critic_updates=2, policy_kwargs=dict(net_arch=[16]), seed=0)

LOGGED = [
    "policy_objective",
    "surrogate_improvement",
    "expected_improvement",
    "kl_divergence",
    "max_kl",
    "kl_before",
    "target_kl",
    "step_size",
    "line_search_steps",
    "is_line_search_success",
    "cg_iterations",
    "cg_residual",
    "grad_norm",
    "entropy",
    "value_loss",
    "explained_variance",
    "skipped_policy_steps",
    "n_updates",
]


class RecordLogs(BaseCallback):
    """Keeps what each update logged under train/."""

    def __init__(self):
        super().__init__()
        self.updates = []

    def _on_rollout_start(self) -> None:
        values = {k[6:]: v for k, v in self.logger.name_to_value.items() if k.startswith("train/")}
        if values:
            self.updates.append(values)

    def _on_step(self) -> bool:
        return True


@pytest.mark.parametrize("space", list(ACTION_SPACES))
def test_learns_on_every_action_space_and_keeps_the_trust_region(space):
    model = TRPO("MlpPolicy", ToyEnv(ACTION_SPACES[space]), target_kl=0.02, **SMALL)
    record = RecordLogs()
    model.learn(64 * 5, callback=record)
    assert len(record.updates) == 4
    for update in record.updates:
        assert set(LOGGED) <= set(update)
        assert ("std" in update) == space.startswith("box")
        assert all(math.isfinite(v) for v in update.values())
        # On 64 different states the largest KL exceeds the mean (test_statistics.py checks both against their definitions).
        assert update["kl_divergence"] <= 0.02 and update["max_kl"] > update["kl_divergence"]
        assert update["kl_before"] == 0.0
    assert any(update["is_line_search_success"] for update in record.updates)


def test_a_scheduled_target_kl_sizes_each_update_by_its_value_at_that_update():
    model = TRPO("MlpPolicy", ToyEnv(ACTION_SPACES["box3"]), target_kl=lambda progress: 0.02 * progress, **SMALL)
    record = RecordLogs()
    model.learn(64 * 5, callback=record)
    # Update k follows rollout k, at progress remaining 1 - k/5; the last one's values stay in the logger.
    updates = [*record.updates, {k[6:]: v for k, v in model.logger.name_to_value.items() if k.startswith("train/")}]
    assert [u["target_kl"] for u in updates] == pytest.approx([0.016, 0.012, 0.008, 0.004, 0.0])
    assert all(u["kl_divergence"] <= u["target_kl"] for u in updates)
    assert any(u["is_line_search_success"] for u in updates[:-1])
    # A trust region of 0 takes no step.
    assert updates[-1]["step_size"] == 0.0 and updates[-1]["is_line_search_success"] == 0.0


def test_a_constant_target_kl_schedule_is_the_same_update_as_the_number():
    by_number = TRPO("MlpPolicy", "Pendulum-v1", target_kl=0.02, **SMALL).learn(64 * 3)
    by_schedule = TRPO("MlpPolicy", "Pendulum-v1", target_kl=lambda _: 0.02, **SMALL).learn(64 * 3)
    assert same_parameters(by_number, by_schedule)


def test_a_target_kl_schedule_that_leaves_the_finite_non_negative_numbers_is_named_and_undone():
    with pytest.raises(ValueError, match="target_kl must be a finite number > 0, or a schedule"):
        TRPO("MlpPolicy", "Pendulum-v1", target_kl=lambda progress: 0.0, **SMALL)
    model = TRPO("MlpPolicy", "Pendulum-v1", target_kl=lambda progress: 0.02 if progress > 0.5 else -0.01, **SMALL)
    kept = KeepPolicyState()
    with pytest.raises(ValueError, match=r"target_kl's schedule must give a finite number >= 0, got -0\.01 at progress"):
        model.learn(64 * 4, callback=kept)  # the first update at progress remaining 0.75, the second at 0.5
    assert model._n_updates == 1
    assert all(th.equal(kept.state[name], value) for name, value in model.policy.state_dict().items())


class KeepPolicyState(BaseCallback):
    """Keeps the policy's state as it was before the latest update."""

    def _on_rollout_end(self) -> None:
        self.state = copy.deepcopy(self.model.policy.state_dict())

    def _on_step(self) -> bool:
        return True


def test_gsde_uses_double_backprop_and_learns():
    model = TRPO("MlpPolicy", "Pendulum-v1", use_sde=True, sde_sample_freq=4, **SMALL)
    record = RecordLogs()
    model.learn(64 * 4, callback=record)
    assert all(u["kl_divergence"] <= model.target_kl for u in record.updates)
    assert any(u["is_line_search_success"] for u in record.updates)


@pytest.mark.parametrize(
    "policy,observation,space",
    [("CnnPolicy", "image", "discrete"), ("MultiInputPolicy", "dict", "box3"), ("MultiInputPolicy", "dict", "multibinary")],
)
def test_cnn_and_dict_observation_policies(policy, observation, space):
    settings = dict(SMALL, policy_kwargs=None)
    model = TRPO(policy, ToyEnv(ACTION_SPACES[space], observation), **settings)
    record = RecordLogs()
    model.learn(64 * 3, callback=record)
    assert any(u["is_line_search_success"] for u in record.updates)
    obs = model.env.reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert model.action_space.contains(actions[0])


def test_subproc_vec_env_and_wrappers():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    env = VecFrameStack(VecNormalize(env), n_stack=2)
    try:
        model = TRPO("MlpPolicy", env, **SMALL)
        model.learn(64 * 2 * 3)
        assert model.num_timesteps == 64 * 2 * 3
        assert model.get_vec_normalize_env() is not None
    finally:
        env.close()


def test_callbacks_eval_checkpoint_and_early_stop(tmp_path):
    eval_env = Monitor(gym.make("CartPole-v1"))
    evaluate = EvalCallback(
        eval_env, eval_freq=64, n_eval_episodes=2, best_model_save_path=str(tmp_path), log_path=str(tmp_path)
    )
    checkpoint = CheckpointCallback(save_freq=128, save_path=str(tmp_path / "ckpt"), name_prefix="trpo")
    model = TRPO("MlpPolicy", "CartPole-v1", **SMALL)
    model.learn(256, callback=[evaluate, checkpoint])
    assert (tmp_path / "evaluations.npz").exists() and (tmp_path / "best_model.zip").exists()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["trpo_128_steps.zip", "trpo_256_steps.zip"]

    stopped = TRPO("MlpPolicy", "CartPole-v1", **SMALL).learn(10_000, callback=StopAfter(100))
    assert stopped.num_timesteps == 100


def test_logger_formats_and_progress_bar(tmp_path):
    model = TRPO("MlpPolicy", "CartPole-v1", **SMALL)
    model.set_logger(configure(str(tmp_path), ["stdout", "csv", "tensorboard"]))
    model.learn(64 * 3, progress_bar=True)
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert {f"train/{key}" for key in LOGGED} <= set(rows[-1])
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_tensorboard_log_argument(tmp_path):
    TRPO("MlpPolicy", "CartPole-v1", tensorboard_log=str(tmp_path), **SMALL).learn(128)
    assert list(tmp_path.glob("TRPO_1/events.out.tfevents.*"))


def same_parameters(a, b):
    return all(th.equal(x, y) for x, y in zip(a.policy.state_dict().values(), b.policy.state_dict().values(), strict=True))


def test_save_load_round_trip(tmp_path):
    env = ToyEnv(ACTION_SPACES["box3"])
    model = TRPO(
        "MlpPolicy",
        env,
        target_kl=0.003,
        line_search_accept_ratio=0.2,
        fvp_method="autograd",
        cg_residual_tol=1e-6,
        ent_coef=0.01,
        **SMALL,
    )
    model.learn(128)
    model.save(tmp_path / "model")
    loaded = TRPO.load(tmp_path / "model", env=env)
    assert same_parameters(model, loaded)
    for name in (
        "target_kl",
        "line_search_accept_ratio",
        "fvp_method",
        "cg_residual_tol",
        "ent_coef",
        "cg_max_steps",
        "n_critic_updates",
        "batch_size",
    ):
        assert getattr(loaded, name) == getattr(model, name), name
    optimizer_state = model.policy.optimizer.state_dict()["state"]
    loaded_state = loaded.policy.optimizer.state_dict()["state"]
    assert all(th.equal(optimizer_state[k]["exp_avg"], loaded_state[k]["exp_avg"]) for k in optimizer_state)
    obs = np.stack([env.observation_space.sample() for _ in range(10)])
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    loaded.set_env(DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box3"])]))
    loaded.learn(128, reset_num_timesteps=False)
    assert loaded.num_timesteps == 256
    if hasattr(sb3_utils, "LinearSchedule"):  # stable-baselines3 >= 2.6: schedules with a plain form
        scheduled = TRPO("MlpPolicy", env, target_kl=sb3_utils.LinearSchedule(0.02, 0.0, 1.0), **SMALL)
        scheduled.save(tmp_path / "scheduled")
        assert TRPO.load(tmp_path / "scheduled", env=env).target_kl(0.5) == pytest.approx(0.01)
    # get_parameters / set_parameters between two models
    fresh = TRPO("MlpPolicy", env, **SMALL)
    fresh.set_parameters(model.get_parameters())
    assert same_parameters(model, fresh)


@pytest.mark.trusts_pickle
def test_a_function_as_schedule_is_restored_by_a_trusted_load_only(tmp_path):
    env = DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box3"])])
    scheduled = TRPO("MlpPolicy", env, target_kl=lambda progress: 0.02 * progress, **SMALL)
    with pytest.warns(UserWarning, match="target_kl .* has no plain form"):
        scheduled.save(tmp_path / "scheduled")
    with pytest.raises(UnsafeFileError, match=r"target_kl: a pickled function .*custom_objects=\{'target_kl'"):
        TRPO.load(tmp_path / "scheduled", env=env)
    assert TRPO.load(tmp_path / "scheduled", env=env, trust_pickle=True).target_kl(0.5) == pytest.approx(0.01)
    given = TRPO.load(tmp_path / "scheduled", env=env, custom_objects={"target_kl": 0.03})
    assert given.target_kl == 0.03


def test_loads_an_sb3_contrib_model_and_keeps_learning(tmp_path):
    contrib = sb3_contrib.TRPO(
        "MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_critic_updates=2, seed=0, target_kl=0.02
    )
    contrib.learn(128)
    contrib.save(tmp_path / "contrib")
    model = TRPO.load(tmp_path / "contrib", env=make_vec_env("Pendulum-v1"))
    assert same_parameters(contrib, model)
    assert model.target_kl == 0.02 and model.fvp_method == "auto"
    # the Adam moments of the critic's parameters come along
    names = {id(p): n for n, p in model.policy.named_parameters()}
    contrib_names = [n for n, _ in contrib.policy.named_parameters()]
    contrib_state = contrib.policy.optimizer.state_dict()["state"]
    for index, param in enumerate(model._critic_params):
        expected = contrib_state[contrib_names.index(names[id(param)])]["exp_avg"]
        assert th.equal(model.policy.optimizer.state_dict()["state"][index]["exp_avg"], expected)
    obs = np.stack([model.observation_space.sample() for _ in range(5)])
    np.testing.assert_array_equal(contrib.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    record = RecordLogs()
    model.learn(128, reset_num_timesteps=False, callback=record)
    assert model.num_timesteps == 256 and not same_parameters(contrib, model)


def learned_parameters(vec_env_cls):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=3, vec_env_cls=vec_env_cls)
    model = TRPO("MlpPolicy", env, **dict(SMALL, seed=3))
    model.learn(64 * 2 * 3)
    env.close()
    return [p.detach().clone() for p in model.policy.parameters()]


def test_determinism_same_seed_same_parameters():
    first, second = learned_parameters(DummyVecEnv), learned_parameters(DummyVecEnv)
    assert all(th.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(target_kl=0.0), "target_kl"),
        (dict(target_kl=-1.0), "target_kl"),
        (dict(target_kl=float("nan")), "target_kl"),
        (dict(target_kl=float("inf")), "target_kl"),
        (dict(line_search_shrinking_factor=1.0), "line_search_shrinking_factor"),
        (dict(line_search_shrinking_factor=0.0), "line_search_shrinking_factor"),
        (dict(cg_max_steps=0), "cg_max_steps"),
        (dict(cg_damping=-0.1), "cg_damping"),
        (dict(line_search_max_iter=0), "line_search_max_iter"),
        (dict(batch_size=0), "batch_size"),
        (dict(sub_sampling_factor=0), "sub_sampling_factor"),
        (dict(line_search_accept_ratio=1.0), "line_search_accept_ratio"),
        (dict(fvp_method="exact"), "fvp_method"),
        (dict(ent_coef=-1.0), "ent_coef"),
        (dict(n_steps=1), "n_steps \\* n_envs"),
    ],
)
def test_invalid_hyperparameters_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TRPO("MlpPolicy", "CartPole-v1", **kwargs)


def test_unsupported_action_space_raises_value_error():
    env = ToyEnv(gym.spaces.Tuple([gym.spaces.Discrete(2), gym.spaces.Discrete(2)]))
    with pytest.raises(ValueError, match="action space"):
        TRPO("MlpPolicy", env)


def test_target_kl_is_wrapped_once_as_sb3_wraps_a_schedule_and_kept_as_given(monkeypatch):
    import stable_baselines3.common.utils as sb3_utils

    import sb3_trpo_ext.natural_gradient as core
    from sb3_trpo_ext import hyperparameters

    wrapped = []
    monkeypatch.setattr(core, "as_schedule", lambda value: wrapped.append(value) or hyperparameters.as_schedule(value))
    model = TRPO("MlpPolicy", "Pendulum-v1", target_kl=0.02, **SMALL)
    model.learn(64 * 3)
    assert wrapped == [0.02]  # at set-up, not at each of the three updates
    assert model.target_kl == 0.02  # the hyperparameter a zip saves, as given
    if hasattr(sb3_utils, "FloatSchedule"):  # SB3 2.7+
        assert isinstance(model._target_kl_schedule, sb3_utils.FloatSchedule)
    assert model._target_kl_schedule(0.5) == 0.02
