"""The ``sb3-trpo-ext`` command (also ``python -m sb3_trpo_ext.zoo``): rl_zoo3's commands for this TRPO."""

import difflib
import runpy
import sys
from collections.abc import Callable, Sequence

from sb3_trpo_ext.extras import exits_on_missing_extra, require, require_env
from sb3_trpo_ext.zoo import ALGO, ALGORITHMS, accepted_hyperparameters, config_path, register, unknown_hyperparameters

COMMANDS = ("train", "optimize", "enjoy", "record-video", "plot")

USAGE = """\
usage: sb3-trpo-ext COMMAND [rl_zoo3 flags...]    (also: python -m sb3_trpo_ext.zoo COMMAND ...)

commands:
  train         train an agent with the packaged hyperparameters
  optimize      search hyperparameters with Optuna (train with --optimize-hyperparameters)
  enjoy         run a trained agent
  record-video  record a video of a trained agent
  plot          plot training curves; -o/--output FILE writes the figure instead of showing it

Every flag goes to rl_zoo3 unchanged; --algo defaults to trpo_ext (also: npg_ext, maskable_trpo_ext) and, for train
and optimize, --conf-file to the algorithm's packaged hyperparameters. "sb3-trpo-ext COMMAND --help" lists a command's flags.

Needs the zoo extra: pip install "sb3-trpo-ext[zoo]" (plot also needs "plots"; MuJoCo and Box2D tasks "mujoco"
and "box2d").

example:
  sb3-trpo-ext train --env CartPole-v1 --seed 0
"""


def _value_of(args: Sequence[str], *flags: str) -> str | None:
    for index, arg in enumerate(args):
        if arg in flags and index + 1 < len(args):
            return args[index + 1]
        for flag in flags:
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def check_config_entry(args: Sequence[str], algo: str = ALGO) -> None:
    """Refuse a zoo entry with keys that the algorithm does not take, before any training starts, with a suggestion."""
    conf = _value_of(args, "-conf", "--conf-file") or str(config_path(algo))
    if not conf.endswith((".yml", ".yaml")):
        return
    import yaml

    env_id = _value_of(args, "--env") or "CartPole-v1"
    with open(conf) as file:
        entries = yaml.safe_load(file)
    entry = entries.get(env_id, entries.get("default"))
    if entry is None:
        return  # rl_zoo3 reports the missing entry itself
    unknown = unknown_hyperparameters(entry, algo)
    if unknown:
        accepted = sorted(accepted_hyperparameters(algo))
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, accepted, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        algorithm = ALGORITHMS[algo].__name__
        raise ValueError(f"{conf}: the entry for {env_id} has hyperparameters {algorithm} does not take: {', '.join(hints)}")


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
    env_id = _value_of(args, "--env")
    if env_id is not None and command != "plot":
        require_env(env_id)
    register()
    algo = _value_of(args, "--algo", "-a")
    if algo is None:
        algo, args = ALGO, ["--algo", ALGO, *args]
    if command in ("train", "optimize"):
        from rl_zoo3.train import train

        if algo in ALGORITHMS:  # rl_zoo3's own algorithms keep their own hyperparameter files
            if _value_of(args, "-conf", "--conf-file") is None:
                args += ["--conf-file", str(config_path(algo))]
            check_config_entry(args, algo)
        if command == "optimize" and not {"-optimize", "--optimize-hyperparameters"} & set(args):
            args.append("--optimize-hyperparameters")
        _run(train, "sb3-trpo-ext " + command, args)
    elif command == "enjoy":
        from rl_zoo3.enjoy import enjoy

        _run(enjoy, "sb3-trpo-ext enjoy", args)
    elif command == "record-video":
        _run("rl_zoo3.record_video", "sb3-trpo-ext record-video", args)
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
