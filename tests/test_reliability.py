"""Bad input, numerical faults and interruptions: a clear error, and nothing lost or half-updated."""

import contextlib
import copy
import warnings

import numpy as np
import pytest
import torch as th
from helpers import ACTION_SPACES, ToyEnv, collect_rollout
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

import sb3_trpo_ext.critic
import sb3_trpo_ext.line_search
import sb3_trpo_ext.natural_gradient
from sb3_trpo_ext import TRPO
from sb3_trpo_ext.policies import flat_parameters
from sb3_trpo_ext.safe_loading import load_vec_normalize, save_vec_normalize

SMALL = dict(n_steps=32, batch_size=16, n_critic_updates=2, policy_kwargs=dict(net_arch=[8]), seed=0)


def snapshot(model):
    return (copy.deepcopy(model.policy.state_dict()), copy.deepcopy(model.policy.optimizer.state_dict()), model._n_updates)


def assert_unchanged(model, before):
    policy_state, optimizer_state, n_updates = before
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, policy_state[key]), key
    state = model.policy.optimizer.state_dict()["state"]
    assert state.keys() == optimizer_state["state"].keys()
    for index, moments in state.items():
        for name, value in moments.items():
            assert th.equal(value, optimizer_state["state"][index][name]), (index, name)
    assert model._n_updates == n_updates


def all_finite(model):
    return all(th.isfinite(p).all() for p in model.policy.parameters())


# ---------------------------------------------------------------- validation of combinations


@pytest.mark.parametrize(
    "n_envs,kwargs,message",
    [
        (2, dict(n_steps=8, batch_size=64), "batch_size must be <= n_steps \\* n_envs = 16"),
        (2, dict(n_steps=8, batch_size=8, sub_sampling_factor=16), "sub_sampling_factor must leave at least 2"),
        (1, dict(n_steps=1, batch_size=1, normalize_advantage=True), "n_steps \\* n_envs must be >= 2"),
        (2, dict(on_nonfinite="ignore"), "on_nonfinite must be one of"),
    ],
)
def test_invalid_combinations(n_envs, kwargs, message):
    env = make_vec_env("CartPole-v1", n_envs=n_envs)
    with pytest.raises(ValueError, match=message):
        TRPO("MlpPolicy", env, **kwargs)


def test_boundaries_of_the_combinations_are_allowed():
    env = make_vec_env("CartPole-v1", n_envs=2)
    TRPO("MlpPolicy", env, n_steps=8, batch_size=16, sub_sampling_factor=15)
    TRPO("MlpPolicy", make_vec_env("CartPole-v1"), n_steps=1, batch_size=1, normalize_advantage=False)
    # The documented edges learn: an undamped Fisher (cg_damping >= 0), and two samples to normalise advantages over.
    for kwargs in (dict(cg_damping=0.0, n_steps=16, batch_size=16), dict(n_steps=2, batch_size=2, normalize_advantage=True)):
        model = TRPO("MlpPolicy", make_vec_env("CartPole-v1"), seed=0, **kwargs)
        before = [p.clone() for p in model.policy.parameters()]
        model.learn(4 * model.n_steps)
        assert all_finite(model) and any(not th.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))
    with pytest.raises(ValueError, match="cg_damping must be a finite number >= 0, got -1e-09"):
        TRPO("MlpPolicy", env, cg_damping=-1e-9)


# ---------------------------------------------------------------- non-finite rollouts


class CorruptEnv(ToyEnv):
    """Emits a NaN reward or observation from a given step on."""

    def __init__(self, what, at_step):
        super().__init__(ACTION_SPACES["box3"], episode_length=1000)
        self.what, self.at_step, self.count = what, at_step, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.count += 1
        if self.count > self.at_step:
            if self.what == "rewards":
                reward = float("nan")
            else:
                obs = np.full_like(obs, np.inf)
        return obs, reward, terminated, truncated, info


@pytest.mark.parametrize("what", ["rewards", "observations"])
def test_non_finite_rollout_raises_naming_what_and_where_before_anything_changes(what):
    env = DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["box3"]), lambda: CorruptEnv(what, at_step=20)])
    model = TRPO("MlpPolicy", env, **SMALL)
    before = snapshot(model)
    with pytest.raises(ValueError, match=f"non-finite {what} at step {20 if what == 'rewards' else 21} of env 1"):
        model.learn(32 * 2)
    assert_unchanged(model, before)


@pytest.mark.parametrize("field", ["rewards", "values", "advantages", "returns"])
def test_non_finite_buffer_entries_are_located(field):
    model = TRPO("MlpPolicy", DummyVecEnv([lambda: ToyEnv(ACTION_SPACES["discrete"])] * 2), **SMALL)
    collect_rollout(model)
    before = snapshot(model)
    getattr(model.rollout_buffer, field)[7, 1] = np.inf
    with pytest.raises(ValueError, match=f"non-finite {field} at step 7 of env 1 \\(1 entries"):
        model.train()
    assert_unchanged(model, before)


def test_skip_mode_warns_counts_and_keeps_learning():
    env = DummyVecEnv([lambda: CorruptEnv("rewards", at_step=40)])
    model = TRPO("MlpPolicy", env, on_nonfinite="skip", **SMALL)
    record = []

    class Record(BaseCallback):
        def _on_rollout_start(self):
            record.append(dict(self.logger.name_to_value))

        def _on_step(self):
            return True

    with pytest.warns(RuntimeWarning, match="update skipped: the rollout holds non-finite rewards"):
        model.learn(32 * 4, callback=Record())
    assert model._n_updates == 1  # the first rollout was clean, the next three were not
    assert model._skipped_updates == 3
    assert all_finite(model)


# ---------------------------------------------------------------- numerical faults inside the update


def nan_gradient(monkeypatch):
    real = sb3_trpo_ext.natural_gradient.flat_grad
    monkeypatch.setattr(sb3_trpo_ext.natural_gradient, "flat_grad", lambda *a, **k: real(*a, **k) * float("nan"))


def broken_fisher(monkeypatch, breaking):
    real = sb3_trpo_ext.fast_paths.fisher_vector_product

    def fisher_vector_product(*args, **kwargs):
        product = real(*args, **kwargs)
        return lambda vector: breaking(product(vector))

    monkeypatch.setattr(sb3_trpo_ext.fast_paths, "fisher_vector_product", fisher_vector_product)


def nan_fisher(monkeypatch):
    broken_fisher(monkeypatch, lambda product: product * float("nan"))


def negative_fisher(monkeypatch):
    broken_fisher(monkeypatch, lambda product: -product)


def nan_candidates(monkeypatch):
    real = sb3_trpo_ext.natural_gradient.kl_divergence

    def kl(old, new):
        value = real(old, new)
        # the line search evaluates its candidates without gradients
        return value if th.is_grad_enabled() else value * float("nan")

    monkeypatch.setattr(sb3_trpo_ext.natural_gradient, "kl_divergence", kl)


@pytest.mark.parametrize(
    "fault,reason",
    [
        (nan_gradient, "policy gradient is not finite"),
        (nan_fisher, "curvature"),
        (negative_fisher, "curvature"),
        (nan_candidates, "every line-search candidate"),
    ],
)
def test_numerical_faults_skip_the_step_warn_once_and_count(monkeypatch, fault, reason):
    model = TRPO("MlpPolicy", ToyEnv(ACTION_SPACES["box3"]), **SMALL)
    collect_rollout(model)
    fault(monkeypatch)
    actor_before = flat_parameters(model._actor_params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train()
        model.train()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and reason in messages[0]
    assert model.logger.name_to_value["train/skipped_policy_steps"] == 2
    assert th.equal(flat_parameters(model._actor_params), actor_before)
    assert all_finite(model)
    # TRPO logs a line search that took nothing, as in every update.
    assert model.logger.name_to_value["train/is_line_search_success"] == 0.0
    candidates = model.line_search_max_iter if reason.startswith("every") else 0  # no step size: no candidate
    assert model.logger.name_to_value["train/line_search_steps"] == candidates


# ---------------------------------------------------------------- interruptions


class Interrupt(Exception):
    pass


def test_keyboard_interrupt_in_the_line_search_undoes_the_update(monkeypatch):
    model = TRPO("MlpPolicy", ToyEnv(ACTION_SPACES["box3"]), **SMALL)
    collect_rollout(model)
    before = snapshot(model)
    calls = []

    def interrupt(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return False

    monkeypatch.setattr(sb3_trpo_ext.line_search, "is_acceptable", interrupt)
    with pytest.raises(KeyboardInterrupt):
        model.train()
    assert_unchanged(model, before)


def test_keyboard_interrupt_in_the_critic_undoes_the_update(tmp_path, monkeypatch):
    model = TRPO("MlpPolicy", ToyEnv(ACTION_SPACES["discrete"]), **SMALL)
    model.learn(64)  # the optimiser has state to lose
    collect_rollout(model)
    before = snapshot(model)
    real_steps, steps = sb3_trpo_ext.critic.optimizer_steps, []

    @contextlib.contextmanager
    def optimizer_steps(*args, **kwargs):
        with real_steps(*args, **kwargs) as take_step:

            def step(grads):
                steps.append(1)
                if len(steps) == 3:  # two critic steps have changed the parameters and the optimiser's state
                    raise KeyboardInterrupt
                take_step(grads)

            yield step

    monkeypatch.setattr(sb3_trpo_ext.critic, "optimizer_steps", optimizer_steps)
    with pytest.raises(KeyboardInterrupt):
        model.train()
    monkeypatch.undo()
    assert_unchanged(model, before)
    model.save(tmp_path / "after_interrupt")
    model.learn(64, reset_num_timesteps=False)
    assert all_finite(model)


class FailingEnv(ToyEnv):
    fail = True

    def step(self, action):
        if FailingEnv.fail and self._t == 5:
            raise Interrupt("env broke")
        return super().step(action)


class FailingCallback(BaseCallback):
    def _on_step(self):
        if self.num_timesteps == 45:
            raise Interrupt("callback broke")
        return True


@pytest.mark.parametrize("source", ["env", "callback"])
def test_exception_from_env_or_callback_leaves_a_usable_model(tmp_path, source):
    env_class = FailingEnv if source == "env" else ToyEnv
    FailingEnv.fail = False
    model = TRPO("MlpPolicy", DummyVecEnv([lambda: env_class(ACTION_SPACES["box3"], episode_length=40)]), **SMALL)
    model.learn(32)
    before = snapshot(model)
    FailingEnv.fail = True
    with pytest.raises(Interrupt):
        model.learn(64, reset_num_timesteps=False, callback=FailingCallback() if source == "callback" else None)
    assert_unchanged(model, before)
    model.save(tmp_path / "model")
    FailingEnv.fail = False
    model.learn(64, reset_num_timesteps=False)
    assert all_finite(model) and model._n_updates > before[2]
    TRPO.load(tmp_path / "model")


# ---------------------------------------------------------------- save and load


def test_corrupted_and_foreign_files_give_a_clear_error(tmp_path):
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"this is not a zip file")
    DQN("MlpPolicy", "CartPole-v1").save(tmp_path / "dqn")
    TRPO("MlpPolicy", "CartPole-v1", **SMALL).save(tmp_path / "trpo")
    whole = (tmp_path / "trpo.zip").read_bytes()
    (tmp_path / "truncated.zip").write_bytes(whole[: len(whole) // 2])
    for name in ("garbage.zip", "dqn.zip", "truncated.zip"):
        with pytest.raises(ValueError, match="Could not load a TRPO model"):
            TRPO.load(tmp_path / name)


@pytest.mark.trusts_pickle  # SB3's own route (a pickle) for the user's own file, beside the JSON one
def test_vecnormalize_statistics_travel_the_usual_routes(tmp_path):
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    model = TRPO("MlpPolicy", env, **SMALL)
    model.learn(128)
    model.save(tmp_path / "model")
    env.save(tmp_path / "vecnormalize.pkl")
    save_vec_normalize(env, tmp_path / "vecnormalize.json")
    for restored in (
        VecNormalize.load(tmp_path / "vecnormalize.pkl", make_vec_env("Pendulum-v1", n_envs=2, seed=1)),
        load_vec_normalize(tmp_path / "vecnormalize.json", make_vec_env("Pendulum-v1", n_envs=2, seed=1)),
    ):
        np.testing.assert_array_equal(restored.obs_rms.mean, env.obs_rms.mean)
        loaded = TRPO.load(tmp_path / "model", env=restored)
        loaded.learn(128, reset_num_timesteps=False)
        assert loaded.get_vec_normalize_env() is restored


# ---------------------------------------------------------------- determinism


def parameters_after_learning(vec_env_cls):
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=5, vec_env_cls=vec_env_cls)
    model = TRPO("MlpPolicy", env, **dict(SMALL, seed=5))
    model.learn(32 * 2 * 3)
    env.close()
    return flat_parameters(list(model.policy.parameters()))


def test_subproc_vec_env_is_deterministic_and_matches_dummy():
    first = parameters_after_learning(SubprocVecEnv)
    assert th.equal(first, parameters_after_learning(SubprocVecEnv))
    assert th.equal(first, parameters_after_learning(DummyVecEnv))
