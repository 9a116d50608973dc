"""Learning, end to end: CartPole-v1 solved within 100k steps with the packaged zoo settings for it."""

import gymnasium as gym
import yaml
from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.zoo import ZOO_KEYS, config_path


def test_cartpole_reaches_475_within_100k_steps():
    entry = yaml.safe_load(config_path().read_text())["CartPole-v1"]
    settings = {key: value for key, value in entry.items() if key not in ZOO_KEYS}
    env = make_vec_env("CartPole-v1", n_envs=entry["n_envs"], seed=0)
    model = TRPO(env=env, seed=0, device="cpu", **settings)
    eval_env = Monitor(gym.make("CartPole-v1"))
    eval_env.reset(seed=123)
    stop = StopTrainingOnRewardThreshold(reward_threshold=475, verbose=0)
    evaluate = EvalCallback(
        eval_env, callback_on_new_best=stop, eval_freq=5_000, n_eval_episodes=10, deterministic=True, verbose=0
    )
    model.learn(100_000, callback=evaluate)
    assert evaluate.best_mean_reward >= 475
    assert model.num_timesteps <= 100_000
