"""
``RayVecEnv``: an SB3 ``VecEnv`` whose environments live in Ray actors, on any node of a Ray cluster.

Each actor holds several environments and steps them all in one round trip, so the cost of a remote call is shared
by ``envs_per_actor`` steps. The actors do exactly what ``DummyVecEnv`` does in-process (the same seeds at reset,
the same casts of observations and rewards, the same ``terminal_observation`` and ``TimeLimit.truncated`` infos, the
same automatic reset), so a run gives the same data as with ``DummyVecEnv``.

Every remote call has a deadline. A failure (an environment that raises, an actor that dies, a call that does not
answer in time) frees every actor and raises :class:`RayVecEnvError` naming the environments and the cause; the
model that was using the env keeps its last update, and can be saved or given a fresh env to learn on.
"""

import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import gymnasium as gym
import numpy as np
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.util import dict_to_obs, obs_space_info

from sb3_trpo_ext.extras import require

#: Ray's actor options when none are given: one CPU each, so that Ray spreads the actors over the cluster's cores.
DEFAULT_ACTOR_OPTIONS: dict[str, Any] = {"num_cpus": 1}


def actor_demand(actor_options: dict[str, Any]) -> dict[str, float]:
    """The cluster resources one actor holds while it lives, as Ray counts them (an actor takes 1 CPU unless told)."""
    demand = {
        "CPU": actor_options.get("num_cpus", 1),
        "GPU": actor_options.get("num_gpus", 0),
        "memory": actor_options.get("memory", 0),
        **actor_options.get("resources", {}),
    }
    return {name: float(amount) for name, amount in demand.items() if amount}


def placement_shortfall(n_actors: int, each: dict[str, float], total: dict[str, float]) -> dict[str, tuple[float, float]]:
    """The resources that ``n_actors`` actors asking ``each`` need beyond the cluster's ``total``: name -> (needed, total)."""
    return {
        name: (n_actors * amount, total.get(name, 0.0))
        for name, amount in each.items()
        if n_actors * amount > total.get(name, 0.0)
    }


class RayVecEnvError(RuntimeError):
    """An environment of a :class:`RayVecEnv` failed; ``env_indices`` are the environments it concerns."""

    def __init__(self, message: str, env_indices: Sequence[int]):
        super().__init__(message)
        self.env_indices = list(env_indices)


@dataclass
class _Failure:
    """What an actor returns instead of a result when an environment's own code raised."""

    env_index: int
    call: str
    cause: str
    traceback: str


class EnvironmentGroup:
    """
    The environments of one actor (run inside the actor). Exceptions of the environments' code are returned as
    :class:`_Failure`, never raised, so that the driver can tell them from a lost actor and name the environment.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], first_index: int):
        self.env_fns = env_fns
        self.first_index = first_index
        self.envs: list[gym.Env] = []
        self.keys: list[Any] = []
        self.dtypes: dict[Any, np.dtype] = {}

    def _failure(self, local_index: int, call: str, error: BaseException) -> _Failure:
        return _Failure(self.first_index + local_index, call, f"{type(error).__name__}: {error}", traceback.format_exc())

    def start(self) -> Any:
        """Make the environments; return their spaces, or the failure of the first that could not be made."""
        for local_index, env_fn in enumerate(self.env_fns):
            try:
                self.envs.append(env_fn())
            except Exception as error:
                return self._failure(local_index, "the env function", error)
        space = self.envs[0].observation_space
        self.keys, _, self.dtypes = obs_space_info(space)
        return space, self.envs[0].action_space

    def _stack(self, observations: list[Any]) -> dict[Any, np.ndarray]:
        # As DummyVecEnv's buffers do: every observation is cast to its space's dtype.
        return {
            key: np.stack([np.asarray(obs if key is None else obs[key], dtype=self.dtypes[key]) for obs in observations])
            for key in self.keys
        }

    def reset(self, seeds: list[int | None], options: list[dict[str, Any]]) -> Any:
        observations, infos = [], []
        for local_index, (env, seed, option) in enumerate(zip(self.envs, seeds, options, strict=True)):
            try:
                observation, info = env.reset(seed=seed, **({"options": option} if option else {}))
            except Exception as error:
                return self._failure(local_index, "reset()", error)
            observations.append(observation)
            infos.append(info)
        return self._stack(observations), infos

    def step(self, actions: np.ndarray) -> Any:
        observations, rewards, dones, infos, reset_infos = [], [], [], [], []
        for local_index, (env, action) in enumerate(zip(self.envs, actions, strict=True)):
            try:
                observation, reward, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                info["TimeLimit.truncated"] = truncated and not terminated
                reset_info = None
                if done:
                    info["terminal_observation"] = observation
                    observation, reset_info = env.reset()
            except Exception as error:
                return self._failure(local_index, "step()", error)
            observations.append(observation)
            rewards.append(reward)
            dones.append(done)
            infos.append(info)
            reset_infos.append(reset_info)
        return self._stack(observations), rewards, dones, infos, reset_infos

    def apply(self, call: str, local_indices: list[int], function: Callable[[gym.Env], Any]) -> Any:
        results = []
        for local_index in local_indices:
            try:
                results.append(function(self.envs[local_index]))
            except Exception as error:
                return self._failure(local_index, call, error)
        return results

    def get_attr(self, local_indices: list[int], name: str) -> Any:
        return self.apply(f"get_attr({name!r})", local_indices, lambda env: env.get_wrapper_attr(name))

    def has_attr(self, name: str) -> bool:
        for env in self.envs:
            try:
                env.get_wrapper_attr(name)
            except AttributeError:
                return False
        return True

    def set_attr(self, local_indices: list[int], name: str, value: Any) -> Any:
        return self.apply(f"set_attr({name!r})", local_indices, lambda env: setattr(env, name, value))

    def env_method(self, local_indices: list[int], name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        return self.apply(f"env_method({name!r})", local_indices, lambda env: env.get_wrapper_attr(name)(*args, **kwargs))

    def is_wrapped(self, local_indices: list[int], wrapper_class: type[gym.Wrapper]) -> Any:
        return self.apply("env_is_wrapped()", local_indices, lambda env: is_wrapped(env, wrapper_class))

    def render(self) -> Any:
        return self.apply("render()", list(range(len(self.envs))), lambda env: env.render())

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _names(indices: Sequence[int]) -> str:
    if len(indices) == 1:
        return f"environment {indices[0]}"
    if list(indices) == list(range(indices[0], indices[-1] + 1)):
        return f"environments {indices[0]}-{indices[-1]}"
    return f"environments {', '.join(map(str, indices))}"


class RayVecEnv(VecEnv):
    """
    Creates a vectorized environment whose environments run in Ray actors, ``envs_per_actor`` in each, on a Ray
    cluster (see ``docs/scale.md``). Use it wherever SB3 takes a ``VecEnv``::

        env = RayVecEnv([lambda: gym.make("HalfCheetah-v5")] * 64, envs_per_actor=8)
        TRPO("MlpPolicy", env).learn(1_000_000)

    or with ``make_vec_env(..., vec_env_cls=RayVecEnv, vec_env_kwargs=dict(envs_per_actor=8))``.

    :param env_fns: functions that each make one environment; they are sent to the actors (cloudpickled), so
        they must be importable there
    :param envs_per_actor: environments each actor holds and steps in one round trip (the last actor may hold
        fewer)
    :param address: the Ray cluster to connect to when Ray is not yet initialized (``ray.init(address=...)``);
        None starts a local one (or connects to ``RAY_ADDRESS``). When Ray is already initialized it is used as is.
    :param actor_options: Ray's options for each actor (``num_cpus``, ``resources``, ``scheduling_strategy``...);
        default ``{"num_cpus": 1}``
    :param timeout: seconds any remote call may take (a step, a reset, ``env_method``...) before the env fails
        with :class:`RayVecEnvError`
    :param start_timeout: seconds the actors may take to be placed, start their processes and make their
        environments (imports, and a cluster that scales up, take longer than a step)
    """

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        envs_per_actor: int = 1,
        address: str | None = None,
        actor_options: dict[str, Any] | None = None,
        timeout: float = 60.0,
        start_timeout: float = 120.0,
    ):
        require("ray", "RayVecEnv")
        import ray

        if len(env_fns) == 0:
            raise ValueError("env_fns must hold at least one environment function, got none")
        if envs_per_actor < 1:
            raise ValueError(f"envs_per_actor must be >= 1, got {envs_per_actor}")
        for name, seconds in (("timeout", timeout), ("start_timeout", start_timeout)):
            if not seconds > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {seconds}")
        if not ray.is_initialized():
            ray.init(address=address)
        self.envs_per_actor = envs_per_actor
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.actor_options = dict(DEFAULT_ACTOR_OPTIONS if actor_options is None else actor_options)
        self.closed = False
        self.waiting = False
        n_envs = len(env_fns)
        #: (first, stop) environment indices of each actor
        self.slices = [(first, min(first + envs_per_actor, n_envs)) for first in range(0, n_envs, envs_per_actor)]
        self._check_placeable(n_envs)
        group = ray.remote(EnvironmentGroup).options(**self.actor_options)
        # Any: Ray's stubs do not type an actor's remote methods.
        self.actors: list[Any] = [group.remote(env_fns[first:stop], first) for first, stop in self.slices]
        observation_space, action_space = self._gather(
            [actor.start.remote() for actor in self.actors], "start()", timeout=start_timeout, extra=self._placement_hint
        )[0]
        self.keys, _, _ = obs_space_info(observation_space)
        self.reset_infos: list[dict[str, Any]] = [{} for _ in range(n_envs)]
        self._step_refs: list[Any] = []
        super().__init__(n_envs, observation_space, action_space)

    # The remote calls

    def _check_placeable(self, n_envs: int) -> None:
        """Fail at once, with the fix, when the cluster's total resources can never hold every actor at the same time
        (a wait for them would only end at ``start_timeout``)."""
        import ray

        each = actor_demand(self.actor_options)
        short = placement_shortfall(len(self.slices), each, ray.cluster_resources())
        if not short:
            return
        needs = ", ".join(f"{needed:g} {name} (the cluster has {total:g})" for name, (needed, total) in short.items())
        fix = "hold more environments per actor (envs_per_actor)"
        cpus = ray.cluster_resources().get("CPU", 0.0)
        if "CPU" in short and cpus >= each["CPU"]:
            fits = int(cpus // each["CPU"])
            fix += f", e.g. envs_per_actor={-(-n_envs // fits)} for {fits} actors"
        raise RayVecEnvError(
            f"the {len(self.slices)} Ray actors of {n_envs} environments ({self.envs_per_actor} per actor) can never be "
            f"placed together: each actor asks for {self.actor_options}, so together they need {needs}. To fit, {fix}, "
            f"or ask less of each actor (actor_options, e.g. {{'num_cpus': 0.5}})",
            list(range(n_envs)),
        )

    def _placement_hint(self) -> str:
        import ray

        return f" (each actor asks for {self.actor_options}; the cluster has {ray.available_resources()} free)"

    def _gather(
        self,
        refs: list[Any],
        call: str,
        actors: list[int] | None = None,
        timeout: float | None = None,
        extra: Callable[[], str] | None = None,
    ) -> list:
        """
        The results of one remote call per actor (``actors``: which, all by default) within ``timeout`` (default:
        the env's); any failure ends the env. ``extra`` adds to a timeout's message.
        """
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayError

        actors = list(range(len(self.actors))) if actors is None else actors
        seconds = timeout or self.timeout
        try:
            results = ray.get(refs, timeout=seconds)
        except RayError as error:
            # ray.get raises at the first failure, while other actors may still be well within their deadline:
            # a call that has answered with a failure is the cause, and only without one is it a timeout.
            answered, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            results, silent = [], []
            for actor, ref in zip(actors, refs, strict=True):
                if ref not in answered:
                    silent.append(actor)
                    continue
                try:
                    results.append(ray.get(ref, timeout=0))
                except RayActorError as lost:
                    self._fail(actor, f"lost its Ray actor during {call}: {type(lost).__name__}: {lost}")
                except RayError as failed:  # outside the environments' code: the results could not be sent, say
                    self._fail(actor, f"failed during {call}: {type(failed).__name__}: {failed}")
                self._raise_if_failed(results[-1])
            if not isinstance(error, GetTimeoutError):
                self._free()
                raise RayVecEnvError(f"{call} failed: {type(error).__name__}: {error}", list(range(self.num_envs))) from error
            if silent:
                self._fail(silent[0], f"did not answer {call} within {seconds} s" + (extra() if extra else ""))
            # Every call answered between the deadline and the check: nothing failed.
        for result in results:
            self._raise_if_failed(result)
        return results

    def _raise_if_failed(self, result: Any) -> None:
        if isinstance(result, _Failure):
            self._free()
            raise RayVecEnvError(
                f"environment {result.env_index} raised {result.cause} in {result.call}\n"
                f"Traceback in the Ray actor:\n{result.traceback}",
                [result.env_index],
            )

    def _fail(self, actor: int, what: str) -> NoReturn:
        indices = list(range(*self.slices[actor]))
        self._free()
        raise RayVecEnvError(f"{_names(indices)} (Ray actor {actor}) {what}", indices)

    def _each(self, call: str, indices: VecEnvIndices, method: str, *args: Any) -> list[Any]:
        """
        Call ``method`` of the actors that hold ``indices``, each once with its local indices; one result per
        environment, in the order of ``indices``.
        """
        self._check_open()
        targets = list(self._get_indices(indices))
        groups: dict[int, list[int]] = {}  # actor -> local indices
        for index in targets:
            actor = index // self.envs_per_actor
            groups.setdefault(actor, []).append(index - self.slices[actor][0])
        refs = [getattr(self.actors[actor], method).remote(local, *args) for actor, local in groups.items()]
        results = self._gather(refs, call, list(groups))
        by_index = {
            self.slices[actor][0] + local: value
            for (actor, locals_), values in zip(groups.items(), results, strict=True)
            for local, value in zip(locals_, values, strict=True)
        }
        return [by_index[index] for index in targets]

    def _check_open(self) -> None:
        if self.closed:
            raise RayVecEnvError("this RayVecEnv is closed (after close() or a failure): make a new one", [])

    def _observations(self, parts: list[dict[Any, np.ndarray]]) -> VecEnvObs:
        return dict_to_obs(self.observation_space, {key: np.concatenate([part[key] for part in parts]) for key in self.keys})

    # VecEnv

    def reset(self) -> VecEnvObs:
        self._check_open()
        refs = [
            actor.reset.remote(self._seeds[first:stop], self._options[first:stop])
            for actor, (first, stop) in zip(self.actors, self.slices, strict=True)
        ]
        results = self._gather(refs, "reset()")
        self.reset_infos = [info for _, infos in results for info in infos]
        # Seeds and options are used once, as in SB3's VecEnvs.
        self._reset_seeds()
        self._reset_options()
        return self._observations([observations for observations, _ in results])

    def step_async(self, actions: np.ndarray) -> None:
        self._check_open()
        self._step_refs = [
            actor.step.remote(actions[first:stop]) for actor, (first, stop) in zip(self.actors, self.slices, strict=True)
        ]
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        results = self._gather(self._step_refs, "step()")
        self.waiting = False
        rewards, dones, infos = [], [], []
        for (first, _), (_, group_rewards, group_dones, group_infos, group_reset_infos) in zip(
            self.slices, results, strict=True
        ):
            rewards += group_rewards
            dones += group_dones
            infos += group_infos
            for index, reset_info in enumerate(group_reset_infos, start=first):
                if reset_info is not None:  # as DummyVecEnv: the info of the reset that followed the episode's end
                    self.reset_infos[index] = reset_info
        return (
            self._observations([result[0] for result in results]),
            np.array(rewards, dtype=np.float32),
            np.array(dones, dtype=bool),
            infos,
        )

    def close(self) -> None:
        """Close the environments (within the timeout) and free every actor."""
        if self.closed:
            return
        import ray

        if not ray.is_initialized():
            self._free()
            return
        closing = [actor.close.remote() for actor in self.actors]
        ray.wait(closing, num_returns=len(closing), timeout=self.timeout)
        self._free()

    def _free(self) -> None:
        """End every actor now (after a failure the environments are not closed: they may be what failed)."""
        import ray

        self.closed = True
        self.waiting = False
        if ray.is_initialized():  # after ray.shutdown() the actors are gone already
            for actor in self.actors:
                ray.kill(actor)

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            warnings.warn(
                f"The render mode is {self.render_mode}, but get_images() needs 'rgb_array' to obtain images.", stacklevel=2
            )
            return [None] * self.num_envs
        self._check_open()
        results = self._gather([actor.render.remote() for actor in self.actors], "render()")
        return [image for group in results for image in group]

    def has_attr(self, attr_name: str) -> bool:
        self._check_open()
        return all(self._gather([actor.has_attr.remote(attr_name) for actor in self.actors], f"has_attr({attr_name!r})"))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._each(f"get_attr({attr_name!r})", indices, "get_attr", attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._each(f"set_attr({attr_name!r})", indices, "set_attr", attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        return self._each(f"env_method({method_name!r})", indices, "env_method", method_name, method_args, method_kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._each("env_is_wrapped()", indices, "is_wrapped", wrapper_class)
