"""RecurrentTRPO: the natural-gradient step over whole sequences against the dense computation, and sb3-contrib use."""

import copy

import numpy as np
import pytest
import torch as th
from helpers import ACTION_SPACES, DENSE_SETTINGS, SequenceDenseProblem, ToyEnv
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_trpo_ext import TRPO, MaskableTRPO, RecurrentTRPO
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
    # Each kept sequence (environments 0 and 2) starts from the states stored with its first step, hidden and cell,
    # actor's and critic's, all different from each other's (a second rollout starts from non-zero states).
    buffer = model.rollout_buffer
    stored = {
        "actor": (buffer.hidden_states_pi, buffer.cell_states_pi),
        "critic": (buffer.hidden_states_vf, buffer.cell_states_vf),
    }
    for name, states in (("actor", every_other.actor_states), ("critic", every_other.critic_states)):
        for state, array in zip(states, stored[name], strict=True):
            assert state.shape == (1, 2, 3)
            for kept, env in enumerate((0, 2)):
                th.testing.assert_close(state[:, kept], th.as_tensor(array[0, :, env]), rtol=0, atol=0)
            assert not th.equal(state[:, 0], state[:, 1])
    assert not th.equal(every_other.actor_states[0], every_other.actor_states[1])
    # The sequences of environments 0 and 2, step for step.
    th.testing.assert_close(every_other.observations, inputs.observations.reshape(4, N_STEPS, -1)[::2].flatten(0, 1))
    th.testing.assert_close(every_other.episode_starts, inputs.episode_starts.reshape(4, N_STEPS)[::2].flatten())
    # The update: the gradient of all four sequences, the Fisher of sequences 0 and 2 only, each unrolled by hand
    # from the states it started from.
    problem = dense_problem(model)
    kept = SequenceDenseProblem(
        model.policy,
        model._actor_params,
        problem.observations[::2],
        problem.actions.reshape(4, N_STEPS, -1)[::2].flatten(0, 1),
        problem.advantages.reshape(4, N_STEPS)[::2].flatten(),
        tuple(state[::2] for state in problem.module.initial_states),
        problem.module.episode_starts[::2],
    )
    a = kept.fisher().double() + model.cg_damping * th.eye(len(problem.theta0), dtype=th.float64)
    d = th.linalg.solve(a, problem.gradient().double())
    dense_step = (th.sqrt(2 * model.target_kl / (d @ a @ d)) * d).float()
    whole_fisher_step = problem.trpo_step(model.cg_damping, model.target_kl)
    assert float(dense_step @ whole_fisher_step / (dense_step.norm() * whole_fisher_step.norm())) < 0.999
    fraction = problem.line_search_fraction(dense_step, model.target_kl, model.line_search_shrinking_factor,
                                            model.line_search_max_iter, model.line_search_accept_ratio)  # fmt: skip
    model.train()
    step = th.cat([p.detach().reshape(-1) for p in model._actor_params]) - problem.theta0
    assert float(step @ dense_step / (step.norm() * dense_step.norm())) > 0.999
    assert float(step.norm() / dense_step.norm()) == pytest.approx(fraction, rel=1e-3)
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
    # A policy of another kind is refused, made or loaded, naming its kind and the algorithms that take it.
    sb3_kind = r"got ActorCriticPolicy, a SB3 actor-critic policy, which TRPO and NPG take"
    with pytest.raises(ValueError, match=rf"Could not load a RecurrentTRPO model .*RecurrentActorCriticPolicy.*{sb3_kind}"):
        TRPO("MlpPolicy", "CartPole-v1").save(tmp_path / "plain") or RecurrentTRPO.load(tmp_path / "plain")
    with pytest.raises(ValueError, match=f"policy must subclass RecurrentActorCriticPolicy .* for RecurrentTRPO, {sb3_kind}"):
        RecurrentTRPO(TRPO.policy_aliases["MlpPolicy"], "CartPole-v1")
    recurrent_kind = r"got RecurrentActorCriticPolicy, a recurrent policy, which RecurrentTRPO takes"
    with pytest.raises(ValueError, match=rf"Could not load a TRPO model .*for TRPO, {recurrent_kind}"):
        TRPO.load(tmp_path / "recurrent")
    with pytest.raises(ValueError, match=f"policy must subclass ActorCriticPolicy .* for TRPO, {recurrent_kind}"):
        TRPO(RecurrentActorCriticPolicy, "CartPole-v1")
    maskable_kind = r"got MaskableActorCriticPolicy, a maskable policy, which MaskableTRPO and MaskableNPG take"
    with pytest.raises(ValueError, match=f"for RecurrentTRPO, {maskable_kind}"):
        RecurrentTRPO(MaskableTRPO.policy_aliases["MlpPolicy"], "CartPole-v1")


def lstm_by_hand(weights, x, state):
    """One step of a one-layer LSTM written out (torch's gate order: input, forget, cell, output)."""
    h, c = state
    gates = x @ weights["weight_ih_l0"].T + weights["bias_ih_l0"] + h @ weights["weight_hh_l0"].T + weights["bias_hh_l0"]
    i, f, g, o = gates.chunk(4, dim=-1)
    c = th.sigmoid(f) * c + th.sigmoid(i) * th.tanh(g)
    return th.sigmoid(o) * th.tanh(c), c


def reference_critic_fit(model, raw, optimizer_state, n_epochs, batch_size):
    """
    The critic's fit computed independently from the rollout's raw arrays, (n_steps, n_envs, ...): each epoch the
    samples (environment by environment) rotated at the buffer's random split and cut into minibatches of
    ``batch_size``; in each, a sequence starts at the minibatch's first sample, at each environment's first step and
    at each episode start, from the LSTM states stored with that step; the LSTM, unrolled by hand, is reset at episode
    starts; the loss is the mean squared error over the real samples; one Adam step per minibatch.
    """
    policy = model.policy
    names = {id(p): name for name, p in policy.named_parameters()}
    trained = {names[id(p)]: p.detach().clone().requires_grad_(True) for p in model._critic_params}
    frozen = {name: p.detach().clone() for name, p in policy.named_parameters()}
    optimizer = th.optim.Adam(list(trained.values()), lr=policy.optimizer.param_groups[0]["lr"], eps=1e-5)
    optimizer.load_state_dict(optimizer_state)
    lstm = "lstm_actor" if policy.shared_lstm else "lstm_critic"
    n_steps, n_envs = raw["returns"].shape

    def weight(name):
        return trained.get(name, frozen[name])

    def value(h):
        for index, module in enumerate(policy.mlp_extractor.value_net):
            prefix = f"mlp_extractor.value_net.{index}"
            h = h @ weight(f"{prefix}.weight").T + weight(f"{prefix}.bias") if isinstance(module, th.nn.Linear) else module(h)
        return h @ weight("value_net.weight").T + weight("value_net.bias")

    lstm_weights = {key: weight(f"{lstm}.{key}") for key in ("weight_ih_l0", "bias_ih_l0", "weight_hh_l0", "bias_hh_l0")}
    samples, losses = [(env, step) for env in range(n_envs) for step in range(n_steps)], []
    for _ in range(n_epochs):
        split = np.random.randint(len(samples))
        order = samples[split:] + samples[:split]
        for start in range(0, len(order), batch_size):
            minibatch, values, state = order[start : start + batch_size], [], None
            for position, (env, step) in enumerate(minibatch):
                starts_episode = bool(raw["episode_starts"][step, env])
                if position == 0 or step == 0 or starts_episode:  # a new sequence, from the stored states
                    state = tuple(th.as_tensor(raw[key][step, 0, env]) for key in ("hidden_states_vf", "cell_states_vf"))
                if starts_episode:
                    state = (th.zeros_like(state[0]), th.zeros_like(state[1]))
                state = lstm_by_hand(lstm_weights, th.as_tensor(raw["observations"][step, env]), state)
                values.append(value(state[0].detach() if policy.shared_lstm else state[0]))
            returns = th.as_tensor(np.array([raw["returns"][step, env] for env, step in minibatch]))
            loss = ((th.cat(values) - returns) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return [trained[names[id(p)]].detach() for p in model._critic_params], float(np.mean(losses))


@pytest.mark.parametrize("fast_paths", [True, False])
@pytest.mark.parametrize("lstm", ["separate", "shared"])
def test_the_sequence_critic_fit_is_the_fit_computed_by_hand(lstm, fast_paths):
    shared = dict(shared_lstm=True, enable_critic_lstm=False) if lstm == "shared" else {}
    settings = {**TINY, "n_critic_updates": 3, "batch_size": 10, "policy_kwargs": {**TINY["policy_kwargs"], **shared}}
    model = RecurrentTRPO("MlpLstmPolicy", envs(ACTION_SPACES["box3"]), fast_paths=fast_paths, **settings)
    second_rollout(model)  # from non-zero LSTM states, with episode starts inside every environment's rollout
    buffer = model.rollout_buffer
    raw = {key: getattr(buffer, key).copy() for key in
           ("observations", "returns", "episode_starts", "hidden_states_vf", "cell_states_vf")}  # fmt: skip
    assert raw["episode_starts"][1:].any() and np.abs(raw["hidden_states_vf"][0]).max() > 0
    # 48 samples in minibatches of 10: the last one is short, and sequences are padded to the longest of each.
    optimizer_state = copy.deepcopy(model.policy.optimizer.state_dict())
    steps_before = int(optimizer_state["state"][0]["step"])
    rng = np.random.get_state()
    expected, expected_loss = reference_critic_fit(model, raw, optimizer_state, n_epochs=3, batch_size=10)
    np.random.set_state(rng)  # the same random splits of the rollout
    assert model._fit_critic() == pytest.approx(expected_loss, rel=1e-5)
    assert int(model.policy.optimizer.state_dict()["state"][0]["step"]) == steps_before + 3 * 5  # epochs x minibatches
    for param, reference in zip(model._critic_params, expected, strict=True):
        th.testing.assert_close(param.detach(), reference, rtol=1e-5, atol=1e-6)
