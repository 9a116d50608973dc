"""
The ``sb3-trpo-ext`` command (also ``python -m sb3_trpo_ext.zoo``): rl_zoo3's commands for this package's algorithms.

Wrong input (an unknown task, a hyperparameter the algorithm does not take, a value outside what it allows) ends the
command with one line on stderr naming it and what is allowed, and exit status 1.
"""

import contextlib
import difflib
import importlib
import runpy
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from sb3_trpo_ext.extras import exits_on_missing_extra, require, require_env, unknown_env
from sb3_trpo_ext.hyperparameters import HyperparameterError
from sb3_trpo_ext.safe_loading import UnsafeFileError
from sb3_trpo_ext.zoo import ALGO, ALGORITHMS, accepted_hyperparameters, config_path, register, unknown_hyperparameters
from sb3_trpo_ext.zoo.values import UnsafeValueError

COMMANDS = ("train", "optimize", "enjoy", "record-video", "plot")

#: The commands whose rl_zoo3 script takes ``--num-threads``: one torch thread unless the user asks for others.
THREADED_COMMANDS = ("train", "optimize", "enjoy")

USAGE = """\
usage: sb3-trpo-ext COMMAND [rl_zoo3 flags...]    (also: python -m sb3_trpo_ext.zoo COMMAND ...)

commands:
  train         train an agent with the packaged hyperparameters
  optimize      search hyperparameters with Optuna (train with --optimize-hyperparameters)
  enjoy         run a trained agent
  record-video  record a video of a trained agent
  plot          plot training curves; -o/--output FILE writes the figure instead of showing it

Every flag goes to rl_zoo3 unchanged but --trust-pickle. --algo defaults to {default} (also: {others});
for train and optimize --conf-file defaults to the algorithm's packaged hyperparameters; train, optimize and enjoy run
with --num-threads 1 (small networks run fastest on one torch thread) unless given.
"sb3-trpo-ext COMMAND --help" lists a command's flags.

No file a command reads runs code (docs/security.md): saved configs are read as plain YAML and zoo values, models and
VecNormalize statistics without unpickling. --trust-pickle runs rl_zoo3 as it is, for files you trust.

Needs the zoo extra: pip install "sb3-trpo-ext[zoo]", or pip install ".[zoo]" from a checkout (plot also needs
"plots"; MuJoCo and Box2D tasks "mujoco" and "box2d").

example:
  sb3-trpo-ext train --env CartPole-v1 --seed 0
""".format(default=ALGO, others=", ".join(algo for algo in ALGORITHMS if algo != ALGO))


def fail(message: str) -> NoReturn:
    """End the command on wrong input: one line on stderr, exit status 1."""
    print(f"sb3-trpo-ext: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def _value_of(args: Sequence[str], *flags: str) -> str | None:
    for index, arg in enumerate(args):
        if arg in flags and index + 1 < len(args):
            return args[index + 1]
        for flag in flags:
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def _items_of(args: Sequence[str], *flags: str) -> list[str]:
    """The ``key:value`` items after one of ``flags`` (rl_zoo3's ``--hyperparams a:1 b:2``), up to the next flag."""
    for index, arg in enumerate(args):
        if arg in flags:
            items = []
            for item in args[index + 1 :]:
                if item.startswith("-") and ":" not in item:
                    break
                items.append(item)
            return items
    return []


def _unknown_keys_message(keys: Sequence[str], algo: str) -> str:
    accepted = sorted(accepted_hyperparameters(algo))
    hints = []
    for key in keys:
        close = difflib.get_close_matches(key, accepted, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"hyperparameters {ALGORITHMS[algo].__name__} does not take: {', '.join(hints)}"


def check_config_entry(args: Sequence[str], algo: str = ALGO, trusted: bool = False) -> None:
    """
    Refuse hyperparameters that the algorithm does not take, in the zoo entry or in ``--hyperparams``, before any
    training starts, with a suggestion (a :class:`HyperparameterError`), and an entry that names code or asks for too
    much (:func:`~sb3_trpo_ext.zoo.guard.check_entry`), unless the user ``trusted`` the file (``--trust-pickle``).
    """
    given = [item.split(":", 1)[0] for item in _items_of(args, "-params", "--hyperparams")]
    unknown = unknown_hyperparameters(dict.fromkeys(given), algo)
    if unknown:
        raise HyperparameterError(f"--hyperparams has {_unknown_keys_message(unknown, algo)}")
    conf = _value_of(args, "-conf", "--conf-file") or str(config_path(algo))
    if not conf.endswith((".yml", ".yaml")):
        return
    from sb3_trpo_ext.zoo.guard import check_entry, read_zoo_yaml

    env_id = _value_of(args, "--env") or "CartPole-v1"
    entries = read_zoo_yaml(conf)
    if not isinstance(entries, dict):
        raise UnsafeValueError(f"{conf}: not a mapping of entries")
    entry = entries.get(env_id, entries.get("default"))
    if not isinstance(entry, dict):
        return  # rl_zoo3 reports the missing entry itself
    unknown = unknown_hyperparameters(entry, algo)
    if unknown:
        raise HyperparameterError(f"{conf}: the entry for {env_id} has {_unknown_keys_message(unknown, algo)}")
    if not trusted:
        check_entry(entry, f"{conf}: {env_id}")


def check_env_id(env_id: str, args: Sequence[str]) -> None:
    """Fail with one line when ``env_id`` is no registered task (after the zoo's tasks and ``--gym-packages``)."""
    import rl_zoo3.import_envs  # noqa: F401  # registers the zoo's own tasks (CartPoleNoVel-v1, ...)

    for package in _items_of(args, "--gym-packages"):
        importlib.import_module(package)  # as rl_zoo3 does: a package the user names registers its tasks
    problem = unknown_env(env_id)
    if problem is not None:
        fail(f"--env: {problem} (--gym-packages PACKAGE adds one's)")


def run_with_a_model(args: Sequence[str], algo: str) -> list[str]:
    """
    For ``enjoy`` and ``record-video``: the run to load, as ``--exp-id N`` to add to ``args``. Without ``--exp-id``
    (or with 0, rl_zoo3's "latest"), the latest run of the task that holds the model the flags ask for
    (``ENV.zip``; ``best_model.zip`` with ``--load-best``; a checkpoint with ``--load-checkpoint`` or
    ``--load-last-checkpoint``), so that a run that stopped before saving one is skipped, and named. Fails with one
    line when the folder or such a run does not exist.
    """
    from rl_zoo3.utils import EnvironmentName

    env_name = EnvironmentName(_value_of(args, "--env") or "CartPole-v1")
    folder = Path(_value_of(args, "-f", "--folder") or "rl-trained-agents", algo)
    exp_id = int(_value_of(args, "--exp-id") or 0)
    if not folder.is_dir():
        fail(f"-f/--folder: there is no folder {folder} (train writes one: sb3-trpo-ext train --env {env_name} -f ...)")
    if exp_id < 0:
        return []
    checkpoint = _value_of(args, "--load-checkpoint")
    if "--load-best" in args:
        model = "best_model.zip"
    elif checkpoint is not None:
        model = f"rl_model_{checkpoint}_steps.zip"
    else:
        model = "rl_model_*_steps.zip" if "--load-last-checkpoint" in args else f"{env_name}.zip"
    suffixes = (path.name.removeprefix(f"{env_name}_") for path in folder.glob(f"{env_name}_*"))
    runs = sorted((int(suffix) for suffix in suffixes if suffix.isdigit()), reverse=True)
    if exp_id > 0:
        runs = [exp_id] if exp_id in runs else []
    skipped: list[str] = []
    for run in runs:
        if any((folder / f"{env_name}_{run}").glob(model)):
            if skipped:
                print(f"sb3-trpo-ext: loading {folder / f'{env_name}_{run}'}; skipped {', '.join(skipped)}: no {model}",
                      file=sys.stderr)  # fmt: skip
            return ["--exp-id", str(run)]
        skipped.append(f"{env_name}_{run}")
    if exp_id > 0:
        fail(f"--exp-id {exp_id}: {folder / f'{env_name}_{exp_id}'} " + ("holds no " + model if runs else "does not exist"))
    fail(f"no run of {env_name} under {folder} holds {model}" + (f" (looked in {', '.join(skipped)})" if skipped else ""))


def _run(entry_point: Callable[[], object] | str, program: str, args: list[str]) -> None:
    sys.argv = [program, *args]
    if isinstance(entry_point, str):
        runpy.run_module(entry_point, run_name="__main__")
    else:
        entry_point()


@exits_on_missing_extra
def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return
    if not argv or argv[0] not in COMMANDS:
        problem = "a command is needed" if not argv else f"unknown command {argv[0]!r}"
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1) if argv else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"sb3-trpo-ext: {problem}{hint}; choose from {', '.join(COMMANDS)}. See: sb3-trpo-ext --help", file=sys.stderr)
        raise SystemExit(2)
    command, args = argv[0], argv[1:]
    require("zoo", f"sb3-trpo-ext {command}")
    if command == "plot":
        require("plots", "sb3-trpo-ext plot")
    from sb3_trpo_ext.zoo.guard import guarded  # needs PyYAML, which the zoo extra brings

    trusted = "--trust-pickle" in args
    args = [arg for arg in args if arg != "--trust-pickle"]
    try:
        with contextlib.nullcontext() if trusted or command == "plot" else guarded():
            _command(command, args, trusted)
    except (HyperparameterError, UnsafeValueError, UnsafeFileError) as error:
        fail(str(error))


def _command(command: str, args: list[str], trusted: bool) -> None:
    env_id = _value_of(args, "--env")
    if env_id is not None and command != "plot":
        check_env_id(env_id, args)
        require_env(env_id)
    register()
    algo = _value_of(args, "--algo", "-a")
    if algo is None:
        algo, args = ALGO, ["--algo", ALGO, *args]
    if command in THREADED_COMMANDS and _value_of(args, "--num-threads") is None:
        args += ["--num-threads", "1"]
    if command in ("train", "optimize"):
        from rl_zoo3.train import train

        if algo in ALGORITHMS:  # rl_zoo3's own algorithms keep their own hyperparameter files
            if _value_of(args, "-conf", "--conf-file") is None:
                args += ["--conf-file", str(config_path(algo))]
            check_config_entry(args, algo, trusted)
        if command == "optimize" and not {"-optimize", "--optimize-hyperparameters"} & set(args):
            args.append("--optimize-hyperparameters")
        _run(train, "sb3-trpo-ext " + command, args)
    elif command == "enjoy":
        from rl_zoo3.enjoy import enjoy

        _run(enjoy, "sb3-trpo-ext enjoy", args + run_with_a_model(args, algo))
    elif command == "record-video":
        _run("rl_zoo3.record_video", "sb3-trpo-ext record-video", args + run_with_a_model(args, algo))
    else:
        _plot(args)


def _plot(args: list[str]) -> None:
    """rl_zoo3's plot_train; with ``-o/--output FILE`` the figure is written to FILE instead of shown."""
    output = _value_of(args, "-o", "--output")
    if output is not None:
        index = next(i for i, arg in enumerate(args) if arg in ("-o", "--output") or arg.startswith("--output="))
        del args[index : index + (1 if "=" in args[index] else 2)]
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        plt.show = lambda *_, **__: plt.savefig(output, bbox_inches="tight")
    from rl_zoo3.plots.plot_train import plot_train

    _run(plot_train, "sb3-trpo-ext plot", args)


if __name__ == "__main__":
    main()
