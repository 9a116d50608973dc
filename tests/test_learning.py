"""Learning, end to end: CartPole-v1 solved within 100k steps with rl-zoo's TRPO settings for it."""

import gymnasium as gym
from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor

from sb3_trpo_ext import TRPO


def test_cartpole_reaches_475_within_100k_steps():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = TRPO("MlpPolicy", env, n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99,
                 learning_rate=1e-3, n_critic_updates=20, seed=0, device="cpu")
    eval_env = Monitor(gym.make("CartPole-v1"))
    eval_env.reset(seed=123)
    stop = StopTrainingOnRewardThreshold(reward_threshold=475, verbose=0)
    evaluate = EvalCallback(eval_env, callback_on_new_best=stop, eval_freq=5_000, n_eval_episodes=10,
                            deterministic=True, verbose=0)
    model.learn(100_000, callback=evaluate)
    assert evaluate.best_mean_reward >= 475
    assert model.num_timesteps <= 100_000
