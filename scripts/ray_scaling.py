"""
How sampling scales with :class:`~sb3_trpo_ext.ray_vec_env.RayVecEnv`: steps per second against the number of
actors, beside ``SubprocVecEnv`` and ``DummyVecEnv`` stepping the same environments, and what one round trip costs.

    python scripts/ray_scaling.py --output benchmarks/results/scale

Three measurements, written to OUTPUT/scaling.json (with the commit and package versions) and OUTPUT/scaling.md:

1. A stand-in for an expensive simulator, ``SleepEnv``: each step takes ``--step-ms`` of wall time without using the
   CPU, so that a 2-core machine can show how many such simulators a driver keeps busy. Actors 1, 2, 4, 8, 16 with
   ``--envs-per-actor`` each; SubprocVecEnv and DummyVecEnv get the same environments.
2. The fixed costs: the same env with steps of 0 ms, whose time per vectorised step is all overhead; a straight line
   through it against the number of actors gives the cost of a round trip and of each further actor.
3. A fast real task (``--fast-env``, HalfCheetah-v5): microseconds per environment step with each VecEnv.

Speed figures are only valid on an otherwise idle machine.
"""

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from sb3_trpo_ext.benchmark.provenance import provenance
from sb3_trpo_ext.extras import exits_on_missing_extra, require, require_env


class SleepEnv(gym.Env):
    """A simulator stand-in: each step takes ``step_seconds`` of wall time and no CPU; episodes of 1000 steps."""

    observation_space = spaces.Box(-1.0, 1.0, (8,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, step_seconds: float = 0.005):
        self.step_seconds = step_seconds
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.steps = 0
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.step_seconds > 0:
            time.sleep(self.step_seconds)
        self.steps += 1
        return self.observation_space.sample(), float(action[0]), False, self.steps >= 1000, {}


def sleep_env(step_seconds: float) -> Callable[[], gym.Env]:
    return lambda: SleepEnv(step_seconds)


def steps_per_second(env: VecEnv, seconds: float, min_steps: int = 20) -> tuple[float, float]:
    """
    Environment steps per second of ``env`` stepped with random actions for about ``seconds`` (after a warm-up), and
    the CPU milliseconds this process (the driver, all its threads) spent per vectorised step: on a cluster, where
    the environments have cores of their own, the driver's share is what bounds the rate.
    """
    env.reset()
    actions = np.stack([env.action_space.sample() for _ in range(env.num_envs)])
    for _ in range(3):
        env.step(actions)
    steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while steps < min_steps or time.perf_counter() - start < seconds:
        env.step(actions)
        steps += 1
    return steps * env.num_envs / (time.perf_counter() - start), 1000 * (time.process_time() - cpu_start) / steps


def measure(make: Callable[[], VecEnv], seconds: float) -> tuple[float, float]:
    env = make()
    try:
        return steps_per_second(env, seconds)
    finally:
        env.close()


def scaling(actors: list[int], envs_per_actor: int, step_seconds: float, seconds: float, others: bool) -> list[dict]:
    from sb3_trpo_ext.ray_vec_env import RayVecEnv

    rows = []
    for n_actors in actors:
        fns = [sleep_env(step_seconds)] * (n_actors * envs_per_actor)
        # The stand-in's steps use no CPU, so its actors ask for none: all of them are placed on this machine.
        makers: dict[str, Callable[[], VecEnv]] = {
            "ray": partial(RayVecEnv, fns, envs_per_actor, actor_options={"num_cpus": 0}),
            "subproc": partial(SubprocVecEnv, fns),
            "dummy": partial(DummyVecEnv, fns),
        }
        row: dict[str, float] = dict(actors=n_actors, envs=len(fns))
        for name in makers if others else ["ray"]:
            row[name], row[f"{name}_driver_ms"] = measure(makers[name], seconds)
        rows.append(row)
        print(row, flush=True)
    return rows


def round_trip_costs(rows: list[dict], envs_per_actor: int) -> dict[str, float]:
    """
    Straight lines through the 0 ms environment's costs per vectorised step against the number of actors: the wall
    time (here the actors share the driver's cores) and the driver's CPU time (what stays with the driver when the
    actors run elsewhere).
    """
    actors = np.array([row["actors"] for row in rows], dtype=float)
    wall_per_actor, wall_fixed = np.polyfit(actors, [1000 * row["envs"] / row["ray"] for row in rows], 1)
    driver_per_actor, driver_fixed = np.polyfit(actors, [row["ray_driver_ms"] for row in rows], 1)
    return dict(
        wall_fixed_ms=wall_fixed,
        wall_per_actor_ms=wall_per_actor,
        driver_fixed_ms=driver_fixed,
        driver_per_actor_ms=driver_per_actor,
        envs_per_actor=envs_per_actor,
    )


def fast_env(env_id: str, n_envs: int, seconds: float) -> dict[str, float]:
    from sb3_trpo_ext.ray_vec_env import RayVecEnv

    fns: list[Callable[[], gym.Env]] = [lambda: gym.make(env_id)] * n_envs
    # Ray's actors are placed whatever the CPUs, as SubprocVecEnv's processes are, so that both get the same machine.
    anywhere = {"num_cpus": 0}
    makers: dict[str, Callable[[], VecEnv]] = {
        "dummy": lambda: DummyVecEnv(fns),
        "subproc": lambda: SubprocVecEnv(fns),
        f"ray 1x{n_envs}": lambda: RayVecEnv(fns, envs_per_actor=n_envs, actor_options=anywhere),
        f"ray {n_envs}x1": lambda: RayVecEnv(fns, envs_per_actor=1, actor_options=anywhere),
    }
    result = {name: 1e6 / measure(make, seconds)[0] for name, make in makers.items()}  # microseconds per env step
    print(result, flush=True)
    return result


def expected_steps_per_second(actors: int, envs_per_actor: int, step_ms: float, results: dict[str, Any]) -> float:
    """
    The rate ``actors`` actors on a cluster would reach, each with cores of its own, from the measured costs: a
    vectorised step takes the slowest actor's environments (``envs_per_actor * step_ms``), the round trip of one
    actor (the 0 ms environment's wall time with 1 actor) and the driver's CPU for each further actor.
    """
    one_actor = next(row for row in results["zero_env"] if row["actors"] == 1)
    round_trip_ms = 1000 * one_actor["envs"] / one_actor["ray"]
    step = envs_per_actor * step_ms + round_trip_ms + results["round_trip"]["driver_per_actor_ms"] * (actors - 1)
    return 1000 * actors * envs_per_actor / step


#: The clusters the worked example is for: machines of this many cores, one actor per core.
CORES_PER_MACHINE = 16


def write_markdown(results: dict[str, Any], path: Path) -> None:
    rows = results["sleep_env"]
    base = rows[0]["ray"]
    lines = [
        f"# RayVecEnv scaling ({results['provenance']['commit'][:8]})",
        "",
        f"`{results['command']}`",
        "",
        f"## A {results['step_ms']} ms environment, {results['envs_per_actor']} environments per actor (steps/s)",
        "",
        "| actors | envs | RayVecEnv | vs 1 actor | driver CPU ms/step | SubprocVecEnv | DummyVecEnv |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['actors']} | {row['envs']} | {row['ray']:.0f} | {row['ray'] / base:.1f}x | "
            f"{row['ray_driver_ms']:.2f} | {row['subproc']:.0f} | {row['dummy']:.0f} |"
        )
    costs = results["round_trip"]
    lines += [
        "",
        "## Fixed costs (a 0 ms environment)",
        "",
        f"Per vectorised step, {costs['envs_per_actor']} environments per actor: wall time "
        f"{costs['wall_fixed_ms']:.2f} ms + {costs['wall_per_actor_ms']:.2f} ms per actor (actors and driver on these "
        f"cores); the driver's CPU {costs['driver_fixed_ms']:.2f} ms + {costs['driver_per_actor_ms']:.2f} ms per actor.",
        "",
        "| actors | wall ms/step | driver CPU ms/step |",
        "|---:|---:|---:|",
        *(
            f"| {row['actors']} | {1000 * row['envs'] / row['ray']:.2f} | {row['ray_driver_ms']:.2f} |"
            for row in results["zero_env"]
        ),
        "",
        f"## {results['fast_env_id']}, {results['fast_n_envs']} environments (microseconds per environment step)",
        "",
        "| VecEnv | us/step |",
        "|---|---:|",
        *(f"| {name} | {value:.0f} |" for name, value in results["fast_env"].items()),
        "",
        f"## Expected on N machines of {CORES_PER_MACHINE} cores, one actor per core (steps/s, a model of the costs above)",
        "",
        "| simulator step | envs per actor | " + " | ".join(f"{n} machine{'s' * (n > 1)}" for n in (1, 2, 4, 8)) + " |",
        "|---:|---:|" + "---:|" * 4,
    ]
    for step_ms in (5.0, 50.0):
        for envs_per_actor in (4, 16):
            rates = [expected_steps_per_second(n * CORES_PER_MACHINE, envs_per_actor, step_ms, results) for n in (1, 2, 4, 8)]
            lines.append(f"| {step_ms:g} ms | {envs_per_actor} | " + " | ".join(f"{rate:.0f}" for rate in rates) + " |")
    check = [
        (row["actors"], expected_steps_per_second(row["actors"], row["envs"] // row["actors"], results["step_ms"], results))
        for row in rows
    ]
    lines += [
        "",
        f"The model against this machine's {results['step_ms']:g} ms runs above: "
        + ", ".join(
            f"{actors} actors {rate:.0f} (measured {row['ray']:.0f})" for (actors, rate), row in zip(check, rows, strict=True)
        )
        + ".",
        "",
    ]
    path.write_text("\n".join(lines))


@exits_on_missing_extra
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--envs-per-actor", type=int, default=4)
    parser.add_argument("--step-ms", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--fast-env", default="HalfCheetah-v5")
    parser.add_argument("--fast-n-envs", type=int, default=4)
    parser.add_argument("--output", default="benchmarks/results/scale")
    parser.add_argument("--report", action="store_true", help="only rewrite OUTPUT/scaling.md from OUTPUT/scaling.json")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if args.report:
        write_markdown(json.loads((output / "scaling.json").read_text()), output / "scaling.md")
        return
    require("ray", "the scaling benchmark")
    require_env(args.fast_env)
    import ray

    ray.init(include_dashboard=False)
    results: dict[str, Any] = dict(
        command=shlex.join(["python", "scripts/ray_scaling.py", *(sys.argv[1:] if argv is None else argv)]),
        step_ms=args.step_ms,
        envs_per_actor=args.envs_per_actor,
        fast_env_id=args.fast_env,
        fast_n_envs=args.fast_n_envs,
        provenance=provenance("trpo_ext"),
    )
    results["sleep_env"] = scaling(args.actors, args.envs_per_actor, args.step_ms / 1000, args.seconds, others=True)
    results["zero_env"] = scaling(args.actors, args.envs_per_actor, 0.0, args.seconds, others=False)
    results["round_trip"] = round_trip_costs(results["zero_env"], args.envs_per_actor)
    results["fast_env"] = fast_env(args.fast_env, args.fast_n_envs, args.seconds)
    ray.shutdown()
    output.mkdir(parents=True, exist_ok=True)
    (output / "scaling.json").write_text(json.dumps(results, indent=1))
    write_markdown(results, output / "scaling.md")
    print((output / "scaling.md").read_text())


if __name__ == "__main__":
    main()
