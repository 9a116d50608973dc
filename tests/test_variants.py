"""MaskableTRPO and NPG: the shared natural-gradient core's variants, each against its dense computation."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from helpers import ACTION_SPACES, DENSE_SETTINGS, DenseProblem, MaskedDenseProblem, MaskedToyEnv, ToyEnv, collect_rollout
from sb3_contrib import MaskablePPO
from sb3_contrib.common.envs import InvalidActionEnvDiscrete, InvalidActionEnvMultiBinary, InvalidActionEnvMultiDiscrete
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.evaluation import evaluate_policy
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.common.maskable.utils import get_action_masks
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_trpo_ext import NPG, TRPO, MaskableNPG, MaskableTRPO, RecurrentTRPO
from sb3_trpo_ext.fisher import fisher_vector_product
from sb3_trpo_ext.line_search import Candidate
from sb3_trpo_ext.maskable import Maskable, MaskedPolicy
from sb3_trpo_ext.natural_gradient import NaturalGradientAlgorithm
from sb3_trpo_ext.policies import PolicyInputs, flat_parameters
from sb3_trpo_ext.recurrent import RecurrentPolicy
from sb3_trpo_ext.surrogate import normalize_advantages
from sb3_trpo_ext.update import distribution_actions

TARGET_KL = 0.01
SMALL = {**DENSE_SETTINGS, "target_kl": TARGET_KL}
MASKED_SPACES = {
    "discrete": spaces.Discrete(5),
    "multidiscrete": spaces.MultiDiscrete([3, 4]),
    "multibinary": spaces.MultiBinary(3),
}


def masked_dims(space):
    if isinstance(space, spaces.Discrete):
        return [int(space.n)]
    if isinstance(space, spaces.MultiDiscrete):
        return [int(n) for n in space.nvec]
    return [2] * int(space.n)


def masked_model_and_problem(space_name, algorithm=MaskableTRPO, **kwargs):
    space = MASKED_SPACES[space_name]
    model = algorithm("MlpPolicy", MaskedToyEnv(space), **{**SMALL, **kwargs})
    collect_rollout(model)
    data = next(model.rollout_buffer.get(batch_size=None))
    problem = MaskedDenseProblem(
        model.policy,
        model._actor_params,
        data.observations,
        data.actions,
        normalize_advantages(data.advantages),
        data.action_masks,
        masked_dims(space),
    )
    return model, problem, data


@pytest.mark.parametrize("space", list(MASKED_SPACES))
def test_the_masks_are_random_and_stored_with_the_rollout(space):
    _, _, data = masked_model_and_problem(space)
    masks = data.action_masks.bool()
    assert not masks.all(), "some actions must be masked for the checks below to mean anything"
    assert masks.float().mean() < 0.9
    # Every sampled action is an allowed one.
    actions = data.actions.long().reshape(len(masks), -1)
    offsets = np.cumsum([0, *masked_dims(MASKED_SPACES[space])[:-1]])
    for k, offset in enumerate(offsets):
        assert masks[th.arange(len(masks)), actions[:, k] + int(offset)].all()


@pytest.mark.parametrize("method", ["analytic", "autograd"])
@pytest.mark.parametrize("space", list(MASKED_SPACES))
def test_masked_fisher_vector_product_is_the_fisher_over_the_allowed_actions(space, method):
    model, problem, data = masked_model_and_problem(space)
    fisher = problem.fisher()
    inputs = PolicyInputs(data.observations, data.action_masks.bool())
    fvp = fisher_vector_product(model.policy, inputs, model._actor_params, method)
    for v in th.randn(3, len(problem.theta0), generator=th.Generator().manual_seed(0)):
        th.testing.assert_close(fvp(v), fisher @ v, rtol=1e-4, atol=1e-6)
    # Without the masks the Fisher is another one: the masked actions would count.
    unmasked = fisher_vector_product(model.policy, PolicyInputs(data.observations), model._actor_params, method)
    v = th.randn(len(problem.theta0), generator=th.Generator().manual_seed(1))
    assert not th.allclose(unmasked(v), fisher @ v, rtol=1e-2)


@pytest.mark.parametrize("fast_paths", [True, False])
@pytest.mark.parametrize("space", list(MASKED_SPACES))
def test_maskable_update_is_the_dense_step_over_the_allowed_actions(space, fast_paths):
    model, problem, _ = masked_model_and_problem(space, fast_paths=fast_paths)
    kl_after = problem.assert_update_is_the_dense_step(model)
    assert 0 < kl_after <= TARGET_KL
    assert model.logger.name_to_value["train/kl_divergence"] == pytest.approx(kl_after, rel=1e-3)


def npg_model(space, **kwargs):
    model = NPG("MlpPolicy", ToyEnv(ACTION_SPACES[space]), **{**SMALL, **kwargs})
    collect_rollout(model)
    batch = next(model.rollout_buffer.get(batch_size=None))
    actions = distribution_actions(batch.actions, model.action_space)
    problem = DenseProblem(
        model.policy, model._actor_params, batch.observations, actions, normalize_advantages(batch.advantages)
    )
    return model, problem


@pytest.mark.parametrize("space", list(ACTION_SPACES))
def test_npg_update_is_the_dense_natural_gradient_step(space):
    model, problem = npg_model(space)
    kl_after = problem.assert_update_is_the_dense_step(model)  # the whole step: NPG has no line search
    assert 0 < kl_after <= 1.5 * TARGET_KL
    logged = model.logger.name_to_value
    assert logged["train/kl_divergence"] == pytest.approx(kl_after, rel=1e-3)
    assert logged["train/step_size"] > 0
    assert "train/is_line_search_success" not in logged and "train/line_search_steps" not in logged


def test_npg_reports_the_kl_it_took_beyond_the_target():
    # A large target: the quadratic model is poor there, and NPG, without a line search, takes the step anyway.
    model, problem = npg_model("discrete", target_kl=2.0)
    model.train()
    kl_after = float(problem.mean_kl(flat_parameters(model._actor_params)))
    assert abs(kl_after - 2.0) > 0.2
    assert model.logger.name_to_value["train/kl_divergence"] == pytest.approx(kl_after, rel=1e-3)


def test_npg_does_not_take_a_non_finite_step(monkeypatch):
    model, problem = npg_model("box3")
    real = NaturalGradientAlgorithm._candidate

    def nan_surrogate(self, batch, theta_old, step):
        candidate = real(self, batch, theta_old, step)
        return Candidate(float("nan"), candidate.mean_kl, candidate.max_kl)

    monkeypatch.setattr(NaturalGradientAlgorithm, "_candidate", nan_surrogate)
    with pytest.warns(RuntimeWarning, match="NPG policy step skipped"):
        model.train()
    assert th.equal(flat_parameters(model._actor_params), problem.theta0)


def test_each_algorithm_is_the_core_with_a_step_rule_and_a_kind_of_policy():
    # The core's only override points are the step rule and the kind: nothing else of the core is overridden.
    def overridden(cls):
        # policy_aliases is derived: each class's are its kind's.
        own = {name for name in vars(cls) if not name.startswith("__") and name not in ("_abc_impl", "policy_aliases")}
        return own & set(vars(NaturalGradientAlgorithm))

    assert overridden(NPG) == {"step_rule"}
    assert overridden(TRPO) == {"step_rule"}  # and a constructor that takes the line search's hyperparameters
    assert overridden(RecurrentTRPO) == {"policy_kind"}
    assert overridden(MaskableTRPO) == overridden(MaskableNPG) == set()
    assert overridden(Maskable) == {"policy_kind", "learn"} and "predict" in vars(Maskable)  # MaskablePPO's API
    assert (MaskableTRPO.policy_kind, MaskableTRPO.step_rule) == (MaskedPolicy, TRPO.step_rule)
    assert (MaskableNPG.policy_kind, MaskableNPG.step_rule) == (MaskedPolicy, NPG.step_rule)
    assert MaskableNPG.policy_aliases is MaskedPolicy.aliases and RecurrentTRPO.policy_aliases is RecurrentPolicy.aliases


def test_two_kinds_of_policy_in_one_algorithm_are_refused_by_name():
    message = r"MaskableRecurrentTRPO combines the policy kinds \['MaskedPolicy', 'RecurrentPolicy'\]"
    with pytest.raises(TypeError, match=message):

        class MaskableRecurrentTRPO(Maskable, RecurrentTRPO):
            pass


@pytest.mark.parametrize("space", list(MASKED_SPACES))
def test_maskable_npg_update_is_the_dense_natural_gradient_step_over_the_allowed_actions(space):
    model, problem, _ = masked_model_and_problem(space, algorithm=MaskableNPG)
    kl_after = problem.assert_update_is_the_dense_step(model)
    assert kl_after > 0
    assert "train/line_search_steps" not in model.logger.name_to_value
    assert model.logger.name_to_value["train/kl_divergence"] == pytest.approx(kl_after, rel=1e-3)


INVALID_ACTION_ENVS = {
    "discrete": lambda: InvalidActionEnvDiscrete(dim=80, n_invalid_actions=60),
    "multidiscrete": lambda: InvalidActionEnvMultiDiscrete(dims=[10, 10], n_invalid_actions=10),
}


@pytest.mark.parametrize("kind", list(INVALID_ACTION_ENVS))
def test_maskable_trpo_learns_and_never_picks_a_masked_action(kind):
    env = INVALID_ACTION_ENVS[kind]()
    model = MaskableTRPO("MlpPolicy", env, gamma=0.4, seed=0).learn(20_000)
    # sb3-contrib's MaskablePPO tests ask for 90 on these tasks (episodes of 100 steps, reward 1 per right action).
    evaluate_policy(model, env, n_eval_episodes=20, reward_threshold=90, warn=False)
    invalid = 0
    obs, _ = env.reset(seed=1)
    for _ in range(10_000):
        masks = get_action_masks(env)
        action, _ = model.predict(obs, action_masks=masks, deterministic=False)
        chosen = np.atleast_1d(action)
        offsets = np.cumsum([0, *env.action_space.nvec[:-1]]) if kind == "multidiscrete" else [0]
        invalid += int(not all(masks[offset + a] for offset, a in zip(offsets, chosen, strict=True)))
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    assert invalid == 0


def test_maskable_trpo_is_used_as_maskable_ppo(tmp_path):
    # ActionMasker, vectorised environments, MaskableEvalCallback, save/load and predict with masks.
    def make():
        env = InvalidActionEnvMultiBinary(dims=6, n_invalid_actions=2)
        return ActionMasker(env, lambda e: e.unwrapped.action_masks())

    env = make_vec_env(make, n_envs=2)
    eval_env = make_vec_env(make, n_envs=1)
    eval_callback = MaskableEvalCallback(eval_env, eval_freq=256, n_eval_episodes=2, log_path=str(tmp_path), warn=False)
    model = MaskableTRPO("MlpPolicy", env, n_steps=128, batch_size=64, seed=0).learn(1024, callback=eval_callback)
    assert len(eval_callback.evaluations_results) == 2  # evaluated with masks every 256 calls (512 steps)
    assert eval_callback.best_mean_reward > 10  # untrained: 5.0 to 8.0 (seeds 0-2, deterministic)
    model.save(tmp_path / "maskable")
    loaded = MaskableTRPO.load(tmp_path / "maskable", env=env)
    assert isinstance(loaded.policy, MaskableActorCriticPolicy)
    obs = env.reset()
    masks = get_action_masks(env)
    expected, _ = model.predict(obs, action_masks=masks, deterministic=True)
    np.testing.assert_array_equal(loaded.predict(obs, action_masks=masks, deterministic=True)[0], expected)
    loaded.learn(256, reset_num_timesteps=False)  # learning goes on after a load


def test_maskable_trpo_without_masking_learns_as_unmasked():
    env = InvalidActionEnvDiscrete(dim=5, n_invalid_actions=2)
    model = MaskableTRPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0).learn(128, use_masking=False)
    assert model.rollout_buffer.action_masks.all()  # nothing read: every action allowed


def test_maskable_trpo_refuses_what_it_cannot_mask():
    with pytest.raises(ValueError, match="needs an action space in"):
        MaskableTRPO("MlpPolicy", "Pendulum-v1")
    with pytest.raises(ValueError, match="policy must subclass MaskableActorCriticPolicy"):
        MaskableTRPO(TRPO.policy_aliases["MlpPolicy"], "CartPole-v1")
    with pytest.raises(ValueError, match="action_masks\\(\\) method"):
        MaskableTRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64).learn(64)
    with pytest.raises(ValueError, match="rollout_buffer_class must be a MaskableRolloutBuffer"):
        from stable_baselines3.common.buffers import RolloutBuffer

        MaskableTRPO("MlpPolicy", "CartPole-v1", rollout_buffer_class=RolloutBuffer)


def test_each_algorithm_refuses_the_others_zips(tmp_path):
    env = DummyVecEnv([lambda: InvalidActionEnvDiscrete(dim=4, n_invalid_actions=1)])
    NPG("MlpPolicy", env, n_steps=64, batch_size=64).save(tmp_path / "npg")
    MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=64).save(tmp_path / "ppo_mask")
    MaskableTRPO("MlpPolicy", env, n_steps=64, batch_size=64).save(tmp_path / "trpo_mask")
    with pytest.raises(ValueError, match=r"Could not load a TRPO model .*no line_search_max_iter"):
        TRPO.load(tmp_path / "npg")
    with pytest.raises(ValueError, match=r"Could not load a MaskableTRPO model .*saved by another algorithm"):
        MaskableTRPO.load(tmp_path / "ppo_mask")
    with pytest.raises(ValueError, match=r"Could not load a TRPO model .*MaskableActorCriticPolicy"):
        TRPO.load(tmp_path / "trpo_mask")
    assert isinstance(NPG.load(tmp_path / "npg"), NPG)
    # Each algorithm's zip, refused by every other one: by the step rule's hyperparameters or by the kind's policy.
    TRPO("MlpPolicy", env, n_steps=64, batch_size=64).save(tmp_path / "trpo")
    MaskableNPG("MlpPolicy", env, n_steps=64, batch_size=64).save(tmp_path / "npg_mask")
    RecurrentTRPO("MlpLstmPolicy", "CartPole-v1", n_steps=64, batch_size=64).save(tmp_path / "trpo_lstm")
    saved = {NPG: "npg", TRPO: "trpo", MaskableTRPO: "trpo_mask", MaskableNPG: "npg_mask", RecurrentTRPO: "trpo_lstm"}
    for algorithm, name in saved.items():
        assert type(algorithm.load(tmp_path / name)) is algorithm
        for other in saved:
            if other is not algorithm:
                with pytest.raises(ValueError, match=rf"Could not load a {other.__name__} model .*saved by|policy"):
                    other.load(tmp_path / name)
    with pytest.raises(ValueError, match=r"it was saved by another algorithm \(it has line_search_accept_ratio"):
        NPG.load(tmp_path / "trpo")


def test_npg_learns_cartpole_with_its_packaged_settings_on_a_fast_budget():
    # The full check (100k steps, seeds 0-2, all 500) is the committed benchmark; here 30k steps must show learning.
    model = NPG("MlpPolicy", "CartPole-v1", seed=0).learn(30_000)
    env = make_vec_env("CartPole-v1", n_envs=1, seed=100)
    from stable_baselines3.common.evaluation import evaluate_policy as sb3_evaluate

    mean, _ = sb3_evaluate(model, env, n_eval_episodes=5, deterministic=True)
    assert mean > 150


@pytest.mark.parametrize("policy,observation", [("CnnPolicy", "image"), ("MultiInputPolicy", "dict")])
def test_maskable_trpo_takes_image_and_dict_observations(policy, observation):
    env = MaskedToyEnv(MASKED_SPACES["multidiscrete"], observation=observation)
    model = MaskableTRPO(policy, env, n_steps=64, batch_size=32, seed=0).learn(128)
    assert isinstance(model.policy, MaskableTRPO.policy_aliases[policy])
    assert model.logger.name_to_value["train/kl_divergence"] > 0  # a step was taken
    assert model.rollout_buffer.action_masks.mean() < 0.9  # with the environment's masks


def test_every_algorithm_s_defaults_are_the_core_s():
    """Each constructor restates the core's parameters (SB3's style: a signature a user can read); the defaults it
    restates are the core's, and the line search's are the same in every algorithm that has one."""
    import inspect

    def defaults(cls):
        return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"}

    core = defaults(NaturalGradientAlgorithm)
    line_search = {name: value for name, value in defaults(TRPO).items() if name.startswith("line_search_")}
    assert len(line_search) == 3
    for cls in (TRPO, NPG, MaskableTRPO, MaskableNPG, RecurrentTRPO):
        own = defaults(cls)
        assert {name: own[name] for name in core} == core, cls.__name__
        extra = {name: value for name, value in own.items() if name not in core}
        assert extra == ({} if cls in (NPG, MaskableNPG) else line_search), cls.__name__
