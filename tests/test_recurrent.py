"""RecurrentTRPO: the natural-gradient step over whole sequences against the dense computation, and sb3-contrib use."""

import numpy as np
import pytest
import torch as th
from helpers import ACTION_SPACES, DENSE_SETTINGS, SequenceDenseProblem, ToyEnv
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_trpo_ext import TRPO, RecurrentTRPO
from sb3_trpo_ext.recurrent import whole_sequences
from sb3_trpo_ext.surrogate import normalize_advantages
from sb3_trpo_ext.update import distribution_actions

N_ENVS, N_STEPS, EPISODE = 2, 24, 7
TINY = {
    **DENSE_SETTINGS,
    "n_steps": N_STEPS,
    "batch_size": 16,
    "policy_kwargs": dict(lstm_hidden_size=3, net_arch=dict(pi=[4], vf=[4])),
}


def envs(space, n_envs=N_ENVS):
    return DummyVecEnv([lambda: ToyEnv(space, episode_length=EPISODE) for _ in range(n_envs)])


def second_rollout(model):
    """A rollout that starts where the first one stopped: from non-zero LSTM states, inside episodes."""
    model.learn(N_STEPS * model.n_envs)
    started_from = tuple(tuple(state.clone() for state in states) for states in model._kind.last_states)
    _, callback = model._setup_learn(N_STEPS * model.n_envs, None, reset_num_timesteps=False)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    return started_from


def dense_problem(model):
    """The whole rollout read straight from the buffer's arrays, (n_steps, n_envs, ...), one sequence per env."""
    buffer = model.rollout_buffer

    def sequences(array):
        return th.as_tensor(array).swapaxes(0, 1)  # (n_envs, n_steps, ...)

    actions = distribution_actions(sequences(buffer.actions).flatten(0, 1), model.action_space)
    advantages = normalize_advantages(sequences(buffer.advantages).flatten())
    initial = (th.as_tensor(buffer.hidden_states_pi[0, 0]), th.as_tensor(buffer.cell_states_pi[0, 0]))  # (n_envs, size)
    starts = sequences(buffer.episode_starts).bool()
    return SequenceDenseProblem(
        model.policy, model._actor_params, sequences(buffer.observations), actions, advantages, initial, starts
    )


@pytest.mark.parametrize("fast_paths", [True, False])
@pytest.mark.parametrize("fvp_method", ["analytic", "autograd"])
@pytest.mark.parametrize("space", ["discrete", "box3"])
def test_recurrent_update_is_the_dense_step_over_whole_sequences(space, fvp_method, fast_paths):
    model = RecurrentTRPO("MlpLstmPolicy", envs(ACTION_SPACES[space]), fvp_method=fvp_method, fast_paths=fast_paths, **TINY)
    started_from = second_rollout(model)
    starts = model.rollout_buffer.episode_starts
    assert starts.any() and not starts[0].all(), "episodes must start inside the sequences, not at their first step"
    problem = dense_problem(model)
    # The states each sequence starts from are those the rollout started from.
    inputs, _, _ = whole_sequences(model.rollout_buffer)
    for ours, rollout in zip(inputs.actor_states, started_from[0], strict=True):
        th.testing.assert_close(ours, rollout, rtol=0, atol=0)
    assert inputs.actor_states[0].abs().sum() > 0
    kl_after = problem.assert_update_is_the_dense_step(model)
    assert 0 < kl_after <= model.target_kl
    assert model.logger.name_to_value["train/kl_divergence"] == pytest.approx(kl_after, rel=1e-3)


def test_subsampling_keeps_whole_sequences_with_their_states():
    model = RecurrentTRPO("MlpLstmPolicy", envs(ACTION_SPACES["box3"], n_envs=4), sub_sampling_factor=2, **TINY)
    second_rollout(model)
    inputs, _, _ = whole_sequences(model.rollout_buffer)
    every_other = inputs.every(2)
    assert every_other.actor_states[0].shape[1] == 2
    th.testing.assert_close(every_other.actor_states[0], inputs.actor_states[0][:, ::2])
    # The sequences of environments 0 and 2, step for step.
    th.testing.assert_close(every_other.observations, inputs.observations.reshape(4, N_STEPS, -1)[::2].flatten(0, 1))
    th.testing.assert_close(every_other.episode_starts, inputs.episode_starts.reshape(4, N_STEPS)[::2].flatten())
    model.train()
    with pytest.raises(ValueError, match="sub_sampling_factor must be <= n_envs = 2"):
        RecurrentTRPO("MlpLstmPolicy", envs(ACTION_SPACES["box3"]), sub_sampling_factor=4, **TINY)


def test_the_rollout_is_recurrent_ppo_s_step_for_step():
    space = ACTION_SPACES["discrete"]
    ours = RecurrentTRPO("MlpLstmPolicy", envs(space), **TINY)
    theirs = RecurrentPPO("MlpLstmPolicy", envs(space), n_steps=N_STEPS, batch_size=16, seed=1,
                          policy_kwargs=TINY["policy_kwargs"])  # fmt: skip
    theirs.policy.load_state_dict(ours.policy.state_dict())
    for model in (ours, theirs):
        model.set_random_seed(7)
        _, callback = model._setup_learn(N_STEPS * N_ENVS, None)
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    for field in ("observations", "actions", "rewards", "episode_starts", "values", "log_probs", "advantages",
                  "returns", "hidden_states_pi", "cell_states_pi", "hidden_states_vf", "cell_states_vf"):  # fmt: skip
        np.testing.assert_allclose(getattr(ours.rollout_buffer, field), getattr(theirs.rollout_buffer, field),
                                   rtol=1e-6, atol=1e-7, err_msg=field)  # fmt: skip


@pytest.mark.parametrize("lstm", ["separate", "shared", "none"])
def test_the_critic_fit_never_moves_the_actor(lstm):
    kwargs = {
        "separate": {},
        "shared": dict(shared_lstm=True, enable_critic_lstm=False),
        "none": dict(enable_critic_lstm=False),
    }
    policy_kwargs = {**TINY["policy_kwargs"], **kwargs[lstm]}
    model = RecurrentTRPO(
        "MlpLstmPolicy", envs(ACTION_SPACES["box3"]), **{**TINY, "n_critic_updates": 3, "policy_kwargs": policy_kwargs}
    )
    second_rollout(model)
    actor_before = [p.detach().clone() for p in model._actor_params]
    critic_before = [p.detach().clone() for p in model._critic_params]
    assert model._fit_critic() is not None
    assert all(th.equal(a, p) for a, p in zip(actor_before, model._actor_params, strict=True))
    assert any(not th.equal(c, p) for c, p in zip(critic_before, model._critic_params, strict=True))
    actor_ids = {id(p) for p in model._actor_params}
    lstm_ids = {id(p) for p in model.policy.lstm_actor.parameters()}
    assert lstm_ids <= actor_ids  # the actor's LSTM (shared or not) is the actor's, trained by the policy step only
    if lstm == "separate":
        assert {id(p) for p in model.policy.lstm_critic.parameters()} <= {id(p) for p in model._critic_params}


def test_recurrent_trpo_is_used_as_recurrent_ppo(tmp_path):
    env = VecNormalize(envs(ACTION_SPACES["box3"]))
    eval_callback = EvalCallback(VecNormalize(envs(ACTION_SPACES["box3"], 1), training=False), eval_freq=24,
                                 n_eval_episodes=2, warn=False)  # fmt: skip
    model = RecurrentTRPO("MlpLstmPolicy", env, **TINY).learn(4 * N_STEPS * N_ENVS, callback=eval_callback)
    assert isinstance(model.policy, RecurrentActorCriticPolicy) and eval_callback.n_calls > 0
    model.save(tmp_path / "recurrent")
    loaded = RecurrentTRPO.load(tmp_path / "recurrent", env=env)
    obs = env.reset()
    state, starts = None, np.ones(N_ENVS, dtype=bool)
    for _ in range(5):  # the same actions from the same states, step after step
        action, next_state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        loaded_action, loaded_state = loaded.predict(obs, state=state, episode_start=starts, deterministic=True)
        np.testing.assert_array_equal(action, loaded_action)
        np.testing.assert_array_equal(next_state[0], loaded_state[0])
        obs, _, dones, _ = env.step(action)
        state, starts = next_state, dones
    loaded.learn(N_STEPS * N_ENVS, reset_num_timesteps=False)
    with pytest.raises(ValueError, match=r"Could not load a RecurrentTRPO model .*RecurrentActorCriticPolicy"):
        TRPO("MlpPolicy", "CartPole-v1").save(tmp_path / "plain") or RecurrentTRPO.load(tmp_path / "plain")
    with pytest.raises(ValueError, match="policy must subclass RecurrentActorCriticPolicy"):
        RecurrentTRPO(TRPO.policy_aliases["MlpPolicy"], "CartPole-v1")
