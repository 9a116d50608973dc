"""
One benchmark run in its own process: train one algorithm on one environment for one seed, and measure it.

Time is split the way SB3's ``learn`` spends it: ``collect_rollouts`` (the environment plus the policy's inference
and the buffer) and ``train()`` (the update); evaluations are timed apart and taken out of both.
"""

import json
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, sync_envs_normalization

from sb3_trpo_ext.benchmark.provenance import provenance
from sb3_trpo_ext.benchmark.settings import ALGORITHMS, RunSettings, settings_for, settings_record

#: One torch thread per run: runs go in parallel processes, and every algorithm gets the same share of the machine.
RUN_THREADS = 1


@dataclass(frozen=True)
class RunSpec:
    """One run: which algorithm, task, seed and budget, and how often to evaluate."""

    env_id: str
    algo: str
    seed: int
    n_timesteps: int
    eval_freq: int
    n_eval_episodes: int
    env_rate_steps: int
    same_settings: bool = False

    @property
    def name(self) -> str:
        return f"{self.env_id}__{self.algo}__seed{self.seed}"


def make_env(settings: RunSettings, env_id: str, seed: int, for_evaluation: bool = False) -> VecEnv:
    """The run's vectorised environment (Monitor-wrapped, made and normalised as its zoo entry says)."""
    if env_id not in gym.registry:
        import rl_zoo3.import_envs  # noqa: F401  # registers the zoo's own tasks (CartPoleNoVel-v1, PendulumNoVel-v1)
    env = make_vec_env(env_id, n_envs=1 if for_evaluation else settings.n_envs, seed=seed, env_kwargs=settings.env_kwargs)
    if settings.normalize_kwargs is not None:
        kwargs = dict(settings.normalize_kwargs)
        if for_evaluation:
            kwargs.update(training=False, norm_reward=False)
        env = VecNormalize(env, **kwargs)
    return env


def env_steps_per_second(env: VecEnv, n_steps: int, seed: int) -> float:
    """The ceiling: steps per second of the same vectorised environment driven by random actions."""
    env.action_space.seed(seed)
    actions = [np.stack([env.action_space.sample() for _ in range(env.num_envs)]) for _ in range(64)]
    env.reset()
    start = time.perf_counter()
    for step in range(max(n_steps // env.num_envs, 1)):
        env.step(actions[step % len(actions)])
    return max(n_steps // env.num_envs, 1) * env.num_envs / (time.perf_counter() - start)


class LearningCurve(BaseCallback):
    """
    Deterministic evaluation on a separate environment at step 0 and every ``eval_freq`` steps; each point also
    records the seconds spent learning so far (evaluations excluded), for curves against wall-clock time.
    """

    def __init__(self, eval_env: VecEnv, eval_freq: int, n_eval_episodes: int):
        super().__init__()
        self.eval_env, self.eval_freq, self.n_eval_episodes = eval_env, eval_freq, n_eval_episodes
        self.points: list[tuple[int, float]] = []
        self.learning_seconds: list[float] = []
        self.seconds = 0.0
        self._next = 0
        self._start = 0.0

    def evaluate(self) -> None:
        start = time.perf_counter()
        self.learning_seconds.append(start - self._start - self.seconds)
        training_env = self.model.get_env()
        if training_env is not None and self.model.get_vec_normalize_env() is not None:
            sync_envs_normalization(training_env, self.eval_env)
        mean_return, _ = evaluate_policy(self.model, self.eval_env, self.n_eval_episodes, deterministic=True)
        self.points.append((self.model.num_timesteps, float(cast(float, mean_return))))
        self.seconds += time.perf_counter() - start

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()
        self.evaluate()
        self._next = self.eval_freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self.evaluate()
            self._next += self.eval_freq
        return True


class PhaseTimer:
    """Wraps a model's ``collect_rollouts`` and ``train`` to time them and to read each update's ``train/`` log."""

    def __init__(self, model: OnPolicyAlgorithm, curve: LearningCurve):
        self.curve = curve
        self.rollout_seconds = 0.0
        self.train_seconds: list[float] = []
        self.train_logs: list[dict[str, float]] = []
        self.fisher_products: list[int] = []
        self._products = 0
        collect_rollouts, train = model.collect_rollouts, model.train
        model.collect_rollouts = self._timed_rollouts(collect_rollouts)  # type: ignore[method-assign]
        model.train = self._timed_train(model, train)  # type: ignore[method-assign]
        # sb3-contrib's TRPO: count its products as they happen. This TRPO's CG takes exactly one Fisher-vector
        # product per iteration (the curvature comes from CG itself), so its log says how many it took.
        self.counts_products = hasattr(model, "hessian_vector_product")
        if self.counts_products:
            setattr(model, "hessian_vector_product", self._counted(getattr(model, "hessian_vector_product")))  # noqa: B009, B010

    def _counted(self, product: Callable) -> Callable:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self._products += 1
            return product(*args, **kwargs)

        return counted

    def _timed_rollouts(self, collect_rollouts: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            evaluating_before = self.curve.seconds
            start = time.perf_counter()
            result = collect_rollouts(*args, **kwargs)
            self.rollout_seconds += time.perf_counter() - start - (self.curve.seconds - evaluating_before)
            return result

        return timed

    def _timed_train(self, model: OnPolicyAlgorithm, train: Callable) -> Callable:
        def timed() -> None:
            self._products = 0
            start = time.perf_counter()
            train()
            self.train_seconds.append(time.perf_counter() - start)
            log = {
                key: float(cast(float, value))
                for key, value in model.logger.name_to_value.items()
                if key.startswith("train/") and np.isscalar(value)
            }
            self.train_logs.append(log)
            self.fisher_products.append(self._products if self.counts_products else int(log.get("train/cg_iterations", 0)))

        return timed


@dataclass
class TrainedRun:
    """A run's model after its training, with what measured it."""

    model: OnPolicyAlgorithm
    settings: RunSettings
    curve: LearningCurve
    timer: PhaseTimer
    wall_seconds: float


def train(spec: RunSpec) -> TrainedRun:
    """Build the run's environments and model as its zoo entry says, and train it, evaluating along the way."""
    th.set_num_threads(RUN_THREADS)
    settings = settings_for(spec.algo, spec.env_id, spec.same_settings)
    env = make_env(settings, spec.env_id, spec.seed)
    eval_env = make_env(settings, spec.env_id, spec.seed + 10_000, for_evaluation=True)
    model = settings.model(env, spec.seed)
    curve = LearningCurve(eval_env, spec.eval_freq, spec.n_eval_episodes)
    timer = PhaseTimer(model, curve)

    start = time.perf_counter()
    model.learn(spec.n_timesteps, callback=curve)
    if curve.points[-1][0] != model.num_timesteps:
        curve.evaluate()
    # The wall time includes every evaluation, the final one too, so that subtracting them leaves the learning.
    return TrainedRun(model, settings, curve, timer, time.perf_counter() - start)


def execute(spec: RunSpec, output_dir: str | None = None) -> dict[str, Any]:
    """Train and measure one run; with ``output_dir``, also write it to ``output_dir/runs/NAME.json``."""
    run = train(spec)
    model, settings, curve, timer, wall_seconds = run.model, run.settings, run.curve, run.timer, run.wall_seconds
    learning_seconds = wall_seconds - curve.seconds
    env, eval_env = model.get_env(), curve.eval_env
    assert env is not None

    rate_env = make_env(settings, spec.env_id, spec.seed)
    ceiling = env_steps_per_second(rate_env, spec.env_rate_steps, spec.seed)
    rate_env.close()
    env.close()
    eval_env.close()

    logs = timer.train_logs
    keys = sorted({key for log in logs for key in log})
    log_means = {key: float(np.mean([log[key] for log in logs if key in log])) for key in keys}
    record = dict(
        **asdict(spec),
        label=ALGORITHMS[spec.algo],
        **settings_record(settings),
        provenance=provenance(spec.algo),
        timesteps_done=int(model.num_timesteps),
        curve_steps=[step for step, _ in curve.points],
        curve_returns=[value for _, value in curve.points],
        curve_seconds=curve.learning_seconds,
        final_return=curve.points[-1][1],
        wall_seconds=wall_seconds,
        eval_seconds=curve.seconds,
        rollout_seconds=timer.rollout_seconds,
        train_seconds=float(sum(timer.train_seconds)),
        n_updates=len(timer.train_seconds),
        train_ms_per_update=1000 * statistics.median(timer.train_seconds) if timer.train_seconds else float("nan"),
        steps_per_second=model.num_timesteps / learning_seconds,
        env_only_steps_per_second=ceiling,
        fisher_products_per_update=float(np.mean(timer.fisher_products)) if spec.algo != "ppo" else None,
        peak_memory_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        train_log_means=log_means,
    )
    if output_dir is not None:
        write_run(record, output_dir)
    return record


def write_run(record: dict[str, Any], output_dir: str | Path) -> Path:
    """Write a run's record to ``output_dir/runs/NAME.json``, where the benchmark looks for finished runs."""
    spec = RunSpec(**{key: record[key] for key in RunSpec.__dataclass_fields__})
    path = Path(output_dir, "runs", f"{spec.name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return path
