"""
The rollout's cost beyond the environment, per environment step: SB3's VecEnv stack stepping random actions (the
env-only time), this TRPO's ``collect_rollouts`` and sb3-contrib's, and the environment's own time inside each
rollout, interleaved in one process on one torch thread; then ``train()`` of each. Medians over the repeats, in µs,
then each ratio's median [min, max] over the repeats, taken within each repeat.
It also times the env stack alone while this TRPO's acting runs between its steps ("env between acting"): what the
environment costs once other code runs between its steps. And it times this TRPO's rollout with acting that costs
nothing ("free acting": each step returns the first step's actions, values and log-probabilities): SB3's loop work
without the policy, a floor under any rollout that keeps the loop's contract. Where this TRPO acts in numpy, two more
rollouts do part of its acting at each step (the network; the network and the draw) and return the same outputs: the
differences between the four say where acting's time goes inside the loop.

    python scripts/rollout_overhead.py CartPole-v1 --repeats 5

Both TRPOs take this TRPO's zoo entry (the benchmark's equal settings). Run it on a machine doing nothing else: it
compares speeds.
"""

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th

from sb3_trpo_ext.benchmark.run import make_env
from sb3_trpo_ext.benchmark.settings import settings_for
from sb3_trpo_ext.fast_paths import FastPaths
from sb3_trpo_ext.rollout import NumpyRolloutActor


def learned_model(algo: str, env_id: str) -> Any:
    """A model of ``algo`` with this TRPO's entry for ``env_id`` (the benchmark's equal settings), after one rollout
    and its update."""
    settings = settings_for(algo, env_id, same_settings=True)
    model = settings.model(make_env(settings, env_id, 0), 0)
    return model.learn(settings.n_envs * model.n_steps)


def random_actions(env, n: int = 64) -> list[np.ndarray]:
    """``n`` batches of random actions, one per environment, drawn before any timing."""
    return [np.stack([env.action_space.sample() for _ in range(env.num_envs)]) for _ in range(n)]


def env_only(model, n_steps: int) -> float:
    """Seconds per environment step of the model's VecEnv stack under random actions."""
    env = model.get_env()
    env.reset()
    actions = random_actions(env)
    start = time.perf_counter()
    for step in range(n_steps):
        env.step(actions[step % len(actions)])
    return (time.perf_counter() - start) / (n_steps * env.num_envs)


def env_between_acting(model, n_steps: int) -> float:
    """Seconds per environment step of the VecEnv stack under random actions, timed alone, with the model's rollout
    acting called between its steps (on the same observation, untimed)."""
    env = model.get_env()
    observations = env.reset()
    acting = model._speedups.rollout_acting(model.policy, model._kind)
    episode_starts, step_inputs = np.ones(env.num_envs, dtype=bool), model._kind.step_inputs(env)
    actions = random_actions(env)
    inside = 0.0
    for step in range(n_steps):
        acting.act(observations, episode_starts, step_inputs)
        start = time.perf_counter()
        env.step(actions[step % len(actions)])
        inside += time.perf_counter() - start
    return inside / (n_steps * env.num_envs)


class FreeActing:
    """Acting that costs nothing: the same outputs at every step."""

    def __init__(self, acted: tuple) -> None:
        self.acted = acted

    def act(self, observations: Any, episode_starts: Any, step_inputs: dict) -> tuple:
        return self.acted


class PartialActing(FreeActing):
    """The numpy actor's network, and its draw with ``draw``, at each step; the same outputs as :class:`FreeActing`."""

    def __init__(self, acted: tuple, actor: NumpyRolloutActor, draw: bool) -> None:
        super().__init__(acted)
        self.actor, self.draw = actor, draw

    def act(self, observations: Any, episode_starts: Any, step_inputs: dict) -> tuple:
        self.actor.network(observations)
        if self.draw:
            self.actor.draw()
        return self.acted


@dataclass(frozen=True)
class FreeActingPaths(FastPaths):
    """The model's fast paths, but for acting that costs nothing (or does only part of the work)."""

    acting: FreeActing | None = None

    def rollout_acting(self, policy: Any, kind: Any) -> FreeActing:
        assert self.acting is not None
        return self.acting


def with_free_acting(model) -> dict[str, FreeActingPaths]:
    """The model's fast paths with acting that returns what the model's acting gave at a first step, every step: free,
    and, for the numpy actor, after its network or its network and draw."""
    paths = model._speedups
    acting = paths.rollout_acting(model.policy, model._kind)
    acted = acting.act(model._last_obs, model._last_episode_starts, model._kind.step_inputs(model.get_env()))
    variants = {"free-acting": FreeActing(acted)}
    if isinstance(acting, NumpyRolloutActor):
        variants["network-only"] = PartialActing(acted, acting, draw=False)
        variants["network-and-draw"] = PartialActing(acted, acting, draw=True)
    return {name: FreeActingPaths(paths.enabled, paths.actor, paths.critic, acting=part) for name, part in variants.items()}


def rollout(model, speedups: FastPaths | None = None) -> tuple[float, float]:
    """Seconds per environment step of one ``collect_rollouts`` (with ``speedups`` in place of the model's fast paths,
    if given), and of the environment's steps inside it."""
    own = getattr(model, "_speedups", None)
    if speedups is not None:
        model._speedups = speedups
    _, callback = model._setup_learn(0, callback=None, reset_num_timesteps=False)
    env = model.get_env()
    step, inside = env.step, [0.0]

    def timed(actions):
        start = time.perf_counter()
        result = step(actions)
        inside[0] += time.perf_counter() - start
        return result

    env.step = timed
    start = time.perf_counter()
    model.collect_rollouts(env, callback, model.rollout_buffer, model.n_steps)
    total = time.perf_counter() - start
    del env.step
    if speedups is not None:
        model._speedups = own
    steps = model.n_steps * env.num_envs
    return total / steps, inside[0] / steps


def train(model) -> float:
    start = time.perf_counter()
    model.train()
    return (time.perf_counter() - start) / (model.n_steps * model.get_env().num_envs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("env")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    th.set_num_threads(1)
    models = {algo: learned_model(algo, args.env) for algo in ("trpo_ext", "trpo")}
    free_acting = with_free_acting(models["trpo_ext"])
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        times.setdefault("env only", []).append(env_only(models["trpo_ext"], models["trpo_ext"].n_steps))
        times.setdefault("env between acting", []).append(env_between_acting(models["trpo_ext"], models["trpo_ext"].n_steps))
        for algo, name in (("trpo_ext", "this TRPO"), ("trpo", "sb3-contrib")):
            total, inside = rollout(models[algo])
            times.setdefault(f"{name} rollout", []).append(total)
            times.setdefault(f"{name} env inside", []).append(inside)
        for name, paths in free_acting.items():
            total, inside = rollout(models["trpo_ext"], paths)
            times.setdefault(f"{name} rollout", []).append(total)
            times.setdefault(f"{name} env inside", []).append(inside)
        for algo, name in (("trpo_ext", "this TRPO"), ("trpo", "sb3-contrib")):
            times.setdefault(f"{name} train()", []).append(train(models[algo]))
    median = {name: 1e6 * statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(f"{args.env} {name}: {value:.1f} µs a step")
    # Each ratio within one repeat, whose timings ran back to back: a shared machine's slow spells move both sides.
    ratios = {
        "this TRPO's rollout beyond the env-only time": ("this TRPO rollout", "env only", -1.0),
        "this TRPO's rollout beyond the env's time inside it": ("this TRPO rollout", "this TRPO env inside", -1.0),
        "the env between acting beyond the env-only time": ("env between acting", "env only", -1.0),
        "the free-acting rollout beyond the env-only time": ("free-acting rollout", "env only", -1.0),
        "the free-acting rollout beyond the env's time inside it": ("free-acting rollout", "free-acting env inside", -1.0),
        "sb3-contrib's rollout / this TRPO's": ("sb3-contrib rollout", "this TRPO rollout", 0.0),
        "train(), this / sb3-contrib": ("this TRPO train()", "sb3-contrib train()", 0.0),
    }
    for label, (numerator, denominator, shift) in ratios.items():
        values = [a / b + shift for a, b in zip(times[numerator], times[denominator], strict=True)]
        print(f"{args.env} {label}: {statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]")


if __name__ == "__main__":
    main()
