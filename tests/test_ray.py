"""RayVecEnv and the benchmark's --ray, on a local Ray: DummyVecEnv's data bit for bit, SB3's VecEnv API, faults."""

import json
import os
import subprocess
import sys
import threading
import time

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.extras import MissingExtraError

ray = pytest.importorskip("ray")

from sb3_trpo_ext.ray_vec_env import RayVecEnv, RayVecEnvError, actor_demand, placement_shortfall  # noqa: E402

#: Logical CPUs of the test cluster: the actors ask for one each by default.
CPUS = 4


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def every_actor_freed(within: float = 30.0) -> bool:
    """Whether every CPU of the test cluster is free again (each actor holds one); Ray frees them asynchronously."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) == CPUS:
            return True
        time.sleep(0.1)
    return False


def faulty(env_id: str, **faults):
    """
    An env function whose env fails at step ``faults["at"]``: it raises (``raise_``), kills its process (``die``),
    hangs (``hang``), takes ``slow`` seconds, or returns an info that cannot be pickled (``unpicklable``). The class
    is made here so that Ray's pickler sends it by value: the tests folder is not on the actors' path.
    """

    class Faulty(gym.Wrapper):
        steps = 0

        def step(self, action):
            Faulty.steps += 1
            if Faulty.steps == faults["at"]:
                if faults.get("raise_"):
                    raise ValueError("the simulator lost its licence")
                if faults.get("die"):
                    os._exit(3)
                if faults.get("hang"):
                    time.sleep(600)
                time.sleep(faults.get("slow", 0.0))
                if faults.get("unpicklable"):
                    observation, reward, terminated, truncated, info = self.env.step(action)
                    return observation, reward, terminated, truncated, {**info, "lock": threading.Lock()}
            return self.env.step(action)

    return lambda: Monitor(Faulty(gym.make(env_id)))


def healthy(env_id: str, **kwargs):
    return lambda: Monitor(gym.make(env_id, **kwargs))


def rollout_data(env, seed: int = 0):
    model = TRPO("MlpPolicy", env, n_steps=128, seed=seed)
    model.learn(3 * 128 * env.num_envs)
    buffer = model.rollout_buffer
    names = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs", "advantages", "returns")
    data = {name: getattr(buffer, name).copy() for name in names}
    data["parameters"] = th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().numpy()
    data["episodes"] = np.array([[info["r"], info["l"]] for info in model.ep_info_buffer])
    env.close()
    return data


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_trpo_rollout_buffer_is_dummy_vec_envs_bit_for_bit(env_id):
    # Five envs over three actors (the last holds one), through VecNormalize; Pendulum's episodes end by time limit,
    # CartPole's by termination, inside the three rollouts: automatic resets and terminal observations are exercised.
    def make(vec_env_cls, **kwargs):
        env = make_vec_env(env_id, n_envs=5, seed=7, vec_env_cls=vec_env_cls, vec_env_kwargs=kwargs)
        return VecNormalize(env)

    dummy = rollout_data(make(DummyVecEnv))
    remote = rollout_data(make(RayVecEnv, envs_per_actor=2))
    assert dummy["episodes"].size > 0
    for name, values in dummy.items():
        assert values.dtype == remote[name].dtype, name
        np.testing.assert_array_equal(values, remote[name], err_msg=name)


@pytest.mark.parametrize("algorithm", [PPO, SAC])
def test_any_sb3_algorithm_learns_on_it_as_on_dummy_vec_env(algorithm, tmp_path):
    # On- and off-policy SB3 algorithms, with VecMonitor and an EvalCallback whose eval env is a RayVecEnv too.
    def learn(vec_env_cls, **kwargs):
        env = VecMonitor(make_vec_env("Pendulum-v1", n_envs=2, seed=1, vec_env_cls=vec_env_cls, vec_env_kwargs=kwargs))
        eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=2, vec_env_cls=vec_env_cls, vec_env_kwargs=kwargs)
        callback = EvalCallback(eval_env, eval_freq=100, n_eval_episodes=1, log_path=str(tmp_path / vec_env_cls.__name__))
        extra = dict(learning_starts=100) if algorithm is SAC else dict(n_steps=128)
        model = algorithm("MlpPolicy", env, seed=0, **extra).learn(512, callback=callback)
        env.close()
        eval_env.close()
        return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach(), callback.evaluations_results

    (dummy, dummy_evaluations), (remote, remote_evaluations) = learn(DummyVecEnv), learn(RayVecEnv, envs_per_actor=2)
    assert th.equal(dummy, remote)
    assert len(remote_evaluations) == 2 and remote_evaluations == dummy_evaluations


def test_vec_env_api_matches_dummy_vec_env():
    fns = [healthy("CartPole-v1", render_mode="rgb_array") for _ in range(5)]
    dummy, remote = DummyVecEnv(fns), RayVecEnv(fns, envs_per_actor=2)
    try:
        for env in (dummy, remote):
            env.seed(11)
            env.set_options({"low": -0.01, "high": 0.01})
        np.testing.assert_array_equal(dummy.reset(), remote.reset())
        assert remote.reset_infos == dummy.reset_infos
        for _ in range(30):  # past CartPole's first terminations
            actions = np.array([dummy.action_space.sample() for _ in range(5)])
            expected, got = dummy.step(actions), remote.step(actions)
            for a, b in zip(expected[:3], got[:3], strict=True):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)
            for a, b in zip(expected[3], got[3], strict=True):
                assert a.keys() == b.keys()
                if "terminal_observation" in a:
                    np.testing.assert_array_equal(a["terminal_observation"], b["terminal_observation"])
        assert remote.reset_infos == dummy.reset_infos

        # Attributes and methods, on chosen indices across actors, in the order asked.
        remote.set_attr("marker", "x", indices=[4, 1])
        assert remote.get_attr("marker", indices=[1, 4]) == ["x", "x"]
        assert remote.has_attr("marker") is False  # not on every env
        for index in range(5):
            remote.set_attr("number", index, indices=index)
        assert remote.get_attr("number", indices=[1, 4, 0, 3]) == [1, 4, 0, 3]
        assert remote.env_method("get_wrapper_attr", "number", indices=[2, 0, 3]) == [2, 0, 3]
        assert remote.has_attr("spec") is True
        assert remote.env_method("get_wrapper_attr", "marker", indices=[4]) == ["x"]
        assert [spec.id for spec in remote.get_attr("spec", indices=[3, 0])] == ["CartPole-v1"] * 2
        assert remote.env_is_wrapped(Monitor) == [True] * 5
        assert remote.env_is_wrapped(gym.wrappers.RecordVideo, indices=[2]) == [False]
        assert remote.render_mode == "rgb_array"
        for image, expected_image in zip(remote.get_images(), dummy.get_images(), strict=True):
            np.testing.assert_array_equal(image, expected_image)
        np.testing.assert_array_equal(remote.render(), dummy.render())  # the tiled image
    finally:
        dummy.close()
        remote.close()


def test_reset_infos_after_automatic_resets_are_dummy_vec_env_s_environment_by_environment():
    class CountedResets(gym.Wrapper):
        """Reset infos that differ by environment and by reset; episodes of a length of its own per environment."""

        def __init__(self, env, index):
            super().__init__(env)
            self.index, self.resets = index, 0

        def reset(self, **kwargs):
            observation, info = self.env.reset(**kwargs)
            self.resets += 1
            return observation, {**info, "env": self.index, "resets": self.resets}

    def counted(index):
        return lambda: CountedResets(gym.make("Pendulum-v1", max_episode_steps=3 + index), index)

    fns = [counted(index) for index in range(5)]
    dummy, remote = DummyVecEnv(fns), RayVecEnv(fns, envs_per_actor=2)  # actors of environments 0-1, 2-3, 4
    try:
        for env in (dummy, remote):
            env.seed(5)
        dummy.reset(), remote.reset()
        assert remote.reset_infos == dummy.reset_infos == [{"env": i, "resets": 1} for i in range(5)]
        actions = np.zeros((5, 1), dtype=np.float32)
        for _ in range(12):  # environment i resets every 3 + i steps: at different steps, on different indices
            dummy.step(actions), remote.step(actions)
            assert remote.reset_infos == dummy.reset_infos
        assert [info["resets"] for info in dummy.reset_infos] == [5, 4, 3, 3, 2]
    finally:
        dummy.close()
        remote.close()


def test_faults_name_the_environment_and_the_model_keeps_its_last_update(tmp_path):
    assert every_actor_freed()
    fns = [healthy("Pendulum-v1") for _ in range(4)]
    fns[3] = faulty("Pendulum-v1", at=300, raise_=True)  # during the third rollout of 128 steps
    env = RayVecEnv(fns, envs_per_actor=2)
    model = TRPO("MlpPolicy", env, n_steps=128, seed=0)
    model.learn(128 * 4 * 2)  # two updates
    updated = [th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().clone()]
    with pytest.raises(RayVecEnvError, match=r"environment 3 raised ValueError: the simulator lost its licence in step\(\)"):
        model.learn(128 * 4 * 2, reset_num_timesteps=False)
    assert th.equal(th.nn.utils.parameters_to_vector(model.policy.parameters()), updated[0])
    assert every_actor_freed(), "the actors were not freed"
    with pytest.raises(RayVecEnvError, match="closed"):
        env.reset()

    # It can be saved, and learns on with a fresh env.
    model.save(tmp_path / "model")
    model.set_env(RayVecEnv([healthy("Pendulum-v1") for _ in range(4)], envs_per_actor=2))
    model.learn(128 * 4, reset_num_timesteps=False)
    assert model.num_timesteps >= 128 * 4 * 3
    assert not th.equal(th.nn.utils.parameters_to_vector(model.policy.parameters()), updated[0])
    model.get_env().close()
    assert every_actor_freed()


def test_a_dead_actor_is_named_by_its_environments():
    assert every_actor_freed()
    fns = [healthy("Pendulum-v1"), healthy("Pendulum-v1"), faulty("Pendulum-v1", at=5, die=True), healthy("Pendulum-v1")]
    env = RayVecEnv(fns, envs_per_actor=2)
    env.reset()
    with pytest.raises(RayVecEnvError, match=r"environments 2-3 \(Ray actor 1\) lost its Ray actor during step\(\)") as error:
        for _ in range(10):
            env.step(np.zeros((4, 1)))
    assert error.value.env_indices == [2, 3]
    assert every_actor_freed()


def test_results_that_cannot_be_sent_are_named():
    # The failing actor answers a second late, so that the healthy one has answered (see the test above).
    env = RayVecEnv([healthy("Pendulum-v1"), faulty("Pendulum-v1", at=2, unpicklable=True, slow=1.0)])
    env.reset()
    with pytest.raises(RayVecEnvError, match=r"environment 1 \(Ray actor 1\) failed during step\(\): RayTaskError"):
        for _ in range(3):
            env.step(np.zeros((2, 1)))
    assert every_actor_freed()


def test_a_failure_is_named_while_another_actor_is_still_stepping():
    # The failed call returns first; the slow actor has not answered yet but is well within its deadline.
    env = RayVecEnv([faulty("Pendulum-v1", at=2, slow=3.0), faulty("Pendulum-v1", at=2, unpicklable=True)])
    env.reset()
    with pytest.raises(RayVecEnvError, match=r"environment 1 \(Ray actor 1\) failed during step\(\): RayTaskError"):
        for _ in range(3):
            env.step(np.zeros((2, 1)))
    assert every_actor_freed()


def raise_once_every_call_has_answered(monkeypatch, error: Exception) -> None:
    """The next ``ray.get`` waits for its calls' answers, then raises ``error``: as if it had come just before them."""
    real_get = ray.get

    def get(refs, timeout=None):
        monkeypatch.setattr(ray, "get", real_get)
        real_get(refs)
        raise error

    monkeypatch.setattr(ray, "get", get)


def test_calls_that_answer_just_after_their_deadline_are_not_a_failure(monkeypatch):
    # The deadline passes while the answers are on their way: by the time the env looks, every call has answered.
    env = RayVecEnv([healthy("Pendulum-v1"), healthy("Pendulum-v1")])
    env.reset()
    raise_once_every_call_has_answered(monkeypatch, ray.exceptions.GetTimeoutError("Get timed out"))
    observations, rewards, _, _ = env.step(np.zeros((2, 1)))
    assert observations.shape == (2, 3) and np.isfinite(rewards).all()
    env.close()


def test_a_ray_error_that_no_call_explains_names_every_environment(monkeypatch):
    env = RayVecEnv([healthy("Pendulum-v1"), healthy("Pendulum-v1")])
    env.reset()
    raise_once_every_call_has_answered(monkeypatch, ray.exceptions.RaySystemError("the object store is gone"))
    with pytest.raises(RayVecEnvError, match=r"step\(\) failed: RaySystemError: .*the object store is gone") as raised:
        env.step(np.zeros((2, 1)))
    assert raised.value.env_indices == [0, 1]
    assert every_actor_freed()


def test_a_hanging_environment_times_out_instead_of_hanging():
    fns = [healthy("Pendulum-v1"), faulty("Pendulum-v1", at=2, hang=True)]
    env = RayVecEnv(fns, timeout=3.0)
    env.reset()
    start = time.monotonic()
    with pytest.raises(RayVecEnvError, match=r"environment 1 \(Ray actor 1\) did not answer step\(\) within 3.0 s"):
        for _ in range(3):
            env.step(np.zeros((2, 1)))
    assert time.monotonic() - start < 3.0 + 10.0  # the deadline, plus freeing the actors


def test_env_functions_that_fail_and_actors_that_cannot_be_placed_yet_are_named():
    def broken():
        raise FileNotFoundError("no such scene: warehouse.xml")

    with pytest.raises(RayVecEnvError, match=r"environment 2 raised FileNotFoundError: no such scene: warehouse\.xml"):
        RayVecEnv([healthy("Pendulum-v1"), healthy("Pendulum-v1"), broken], envs_per_actor=2)
    assert every_actor_freed()
    # Placeable on this cluster, but not while another env holds every CPU: that is a wait, up to start_timeout.
    holder = RayVecEnv([healthy("Pendulum-v1")] * CPUS)
    try:
        with pytest.raises(
            RayVecEnvError, match=r"did not answer start\(\) within 2.0 s \(each actor asks for \{'num_cpus': 1\}"
        ):
            RayVecEnv([healthy("Pendulum-v1")], start_timeout=2.0)
    finally:
        holder.close()


def test_actors_the_cluster_can_never_hold_fail_at_once_with_the_fix():
    start = time.monotonic()
    with pytest.raises(RayVecEnvError, match=r"need 64 CPU \(the cluster has 4\)") as error:
        RayVecEnv([healthy("Pendulum-v1")], actor_options={"num_cpus": 64})
    assert "envs_per_actor" in str(error.value) and "actor_options" in str(error.value)
    with pytest.raises(RayVecEnvError, match=r"need 1 warehouse \(the cluster has 0\)"):
        RayVecEnv([healthy("Pendulum-v1")], actor_options={"num_cpus": 0, "resources": {"warehouse": 1}})
    assert time.monotonic() - start < 10.0
    assert placement_shortfall(3, actor_demand({}), {"CPU": 2.0}) == {"CPU": (3.0, 2.0)}
    assert placement_shortfall(2, actor_demand({"num_cpus": 1, "num_gpus": 0.5}), {"CPU": 2.0, "GPU": 1.0}) == {}
    assert every_actor_freed()


def test_four_environments_on_a_laptop_s_two_cpus_fail_at_once_naming_the_fix():
    # A fresh interpreter: this module's Ray has 4 CPUs.
    code = (
        "import time, gymnasium as gym, ray\n"
        "from sb3_trpo_ext.ray_vec_env import RayVecEnv, RayVecEnvError\n"
        "ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    RayVecEnv([lambda: gym.make('Pendulum-v1')] * 4)\n"
        "except RayVecEnvError as error:\n"
        "    print(f'{time.monotonic() - start:.1f}|{error}')\n"
        "env = RayVecEnv([lambda: gym.make('Pendulum-v1')] * 4, envs_per_actor=2)\n"
        "print('placed', env.num_envs)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    seconds, message = result.stdout.splitlines()[0].split("|", 1)
    assert float(seconds) < 5.0, result.stdout  # not start_timeout's 120 s
    assert "need 4 CPU (the cluster has 2)" in message and "envs_per_actor=2 for 2 actors" in message
    assert result.stdout.splitlines()[1] == "placed 4", result.stderr  # the fix it names works


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(env_fns=[]), "env_fns must hold at least one"),
        (dict(envs_per_actor=0), "envs_per_actor must be >= 1, got 0"),
        (dict(timeout=0), "timeout must be > 0 seconds, got 0"),
        (dict(start_timeout=-1.0), "start_timeout must be > 0 seconds, got -1.0"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    kwargs = {"env_fns": [healthy("Pendulum-v1")], **kwargs}
    with pytest.raises(ValueError, match=message):
        RayVecEnv(**kwargs)


def test_without_the_extra_the_message_names_it(monkeypatch):
    monkeypatch.setattr("sb3_trpo_ext.extras.missing_modules", lambda extra: ["ray"] if extra == "ray" else [])
    message = r'pip install "sb3-trpo-ext\[ray\]" \(from a checkout: pip install "\.\[ray\]"\)'
    with pytest.raises(MissingExtraError, match=message):
        RayVecEnv([healthy("Pendulum-v1")])


def test_benchmark_runs_on_ray_give_the_local_runs_results(tmp_path, capsys):
    from sb3_trpo_ext.benchmark.cli import main

    common = ["--envs", "CartPole-v1", "--algos", "trpo_ext", "-n", "2048", "--eval-freq", "1024", "--seeds", "0", "1"]
    assert main([*common, "--output", str(tmp_path / "local")]) == 0
    assert main([*common, "--ray", "--output", str(tmp_path / "ray")]) == 0
    for seed in (0, 1):
        name = f"runs/CartPole-v1__trpo_ext__seed{seed}.json"
        local, remote = (json.loads((tmp_path / where / name).read_text()) for where in ("local", "ray"))
        assert remote["curve_returns"] == local["curve_returns"]
        assert remote["final_return"] == local["final_return"]
        assert remote["provenance"] == local["provenance"]
    # Resumable as local runs: the Ray runs are found finished and not run again.
    capsys.readouterr()
    assert main([*common, "--ray", "--output", str(tmp_path / "ray")]) == 0
    assert "2 runs, 2 already in" in capsys.readouterr().out
