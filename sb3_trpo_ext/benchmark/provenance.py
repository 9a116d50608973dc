"""
What produced a benchmark run: the commit, the package versions, a fingerprint of this TRPO's code and one of the
harness that builds and evaluates every algorithm's runs, the Python version, the CPU and the torch threads.

A finished run is reused only when what would produce it again is the same; the fingerprints let a change of
comments, docstrings or formatting keep the runs, and any change of what the code does retire them.
"""

import ast
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

#: The package's folder: the benchmark's parent, whose code the fingerprints hash.
PACKAGE = Path(__file__).resolve().parents[1]

#: Distributions whose versions decide what a run computes.
PACKAGES = (
    "sb3-trpo-ext",
    "stable-baselines3",
    "sb3-contrib",
    "rl_zoo3",
    "torch",
    "gymnasium",
    "mujoco",
    "box2d",
    "numpy",
)

#: The part of this package that is not the algorithm: changing it changes no return. The benchmark steps its
#: environments in its own process, never through RayVecEnv.
NOT_ALGORITHM = ("benchmark", "zoo", "ray_vec_env.py")

#: What decides a run of any algorithm besides the algorithm: how the benchmark builds, trains and evaluates it
#: (benchmark/run.py, benchmark/settings.py) and the zoo entries with the code that reads them.
HARNESS = ("benchmark/run.py", "benchmark/settings.py", "zoo/__init__.py", "zoo/values.py", "zoo/*.yml")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def _digest(root: Path, paths: list[Path]) -> str:
    """A hash of ``paths`` (relative to ``root``) as their readers read them, so that comments, docstrings and layout do
    not count: Python modules as Python parses them, YAML files as the data they hold, other files as they are."""
    import yaml

    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.relative_to(root).as_posix().encode())
        if path.suffix == ".py":
            digest.update(ast.dump(_without_docstrings(ast.parse(path.read_text()))).encode())
        elif path.suffix in (".yml", ".yaml"):
            data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # safe, in C if built
            digest.update(json.dumps(data, sort_keys=True, default=repr).encode())
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(root: Path) -> str:
    """A hash of the Python modules under ``root`` but the ones of :data:`NOT_ALGORITHM`, as Python reads them."""
    return _digest(root, [path for path in root.rglob("*.py") if path.relative_to(root).parts[0] not in NOT_ALGORITHM])


def harness_fingerprint(root: Path) -> str:
    """A hash of the :data:`HARNESS` files under ``root``, Python modules as Python reads them."""
    return _digest(root, [path for pattern in HARNESS for path in root.glob(pattern)])


@cache
def code_fingerprint() -> str:
    """The fingerprint of this TRPO's algorithm modules."""
    return fingerprint(PACKAGE)


@cache
def package_harness_fingerprint() -> str:
    """The fingerprint of this package's harness, once a process (as the code's: what the process runs)."""
    return harness_fingerprint(PACKAGE)


def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in Linux's /proc/cpuinfo, None where the system has none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> str | None:
    """
    A hash of the processor's instruction-set flags (Linux's /proc/cpuinfo), None where the system does not say. One
    model name can hide several instruction sets, and numpy's vectorised loops round differently on each. A run
    records it and is not matched on it: a reporting seed is run once, whichever machine of its model made it.
    """
    flags = _cpuinfo("flags")
    return None if flags is None else hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:16]


def cpu_model() -> str:
    """The processor's model name as the operating system reports it (``platform.processor()`` where it does not)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def git_commit(root: Path | None = None) -> str | None:
    """
    The checkout's commit, with ``-dirty`` when files other than the benchmark results (``benchmarks/``, which the runs
    themselves write) differ from it; None outside a git checkout.

    :param root: the checkout (default: the one this package is imported from)
    """
    root = root or PACKAGE.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks")
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def provenance(algo: str, threads: int | None = None) -> dict[str, Any]:
    """The commit, versions, fingerprints (the algorithm's code for this package's algorithms, the harness for every
    algorithm), CPU and torch threads a run records; ``threads``: those its process runs on, where it is not this
    one (this process's by default)."""
    import torch as th

    from sb3_trpo_ext.zoo import ALGORITHMS

    return dict(
        commit=git_commit(),
        python=platform.python_version(),
        versions={name: _version(name) for name in PACKAGES},
        code=code_fingerprint() if algo in ALGORITHMS else None,
        harness=package_harness_fingerprint(),
        cpu=cpu_model(),
        cpu_flags=cpu_flags(),
        cpu_count=os.cpu_count(),
        torch_threads=threads or th.get_num_threads(),
    )


#: The harness digests by source fingerprints, in a checkout (``scripts/behaviour.py --harness --record`` adds to it);
#: an installed package has none, so its runs are reused only under the fingerprints that made them.
HARNESS_DIGESTS = PACKAGE.parent / "benchmarks" / "results" / "behaviour" / "harness-digests.json"


def read_harness_digests(path: Path | None = None) -> list[dict[str, Any]]:
    """The rows of the harness digest table at ``path`` (default :data:`HARNESS_DIGESTS`); none where it is missing."""
    path = path or HARNESS_DIGESTS
    return json.loads(path.read_text()) if path.is_file() else []


def same_behaviour(algo: str, recorded: dict[str, Any], current: dict[str, Any], path: Path | None = None) -> bool:
    """
    Whether the table holds equal harness digests for ``algo`` under the recorded and the current fingerprints, made
    on one kind of machine: the fast paths' rounding, so their digests, depend on the instruction set (``cpu_flags``).
    A row from before the flags were recorded stands for any machine.
    """
    rows = [row for row in read_harness_digests(path) if row["algo"] == algo]

    def digests(provenance: dict[str, Any], flags: str | None) -> set[str]:
        return {
            row["digest"]
            for row in rows
            if row["code"] == provenance.get("code")
            and row["harness"] == provenance.get("harness")
            and row.get("cpu_flags") in (flags, None)
        }

    machines = {row.get("cpu_flags") for row in rows if row.get("cpu_flags")} or {None}
    for flags in machines:
        before, now = digests(recorded, flags), digests(current, flags)
        if before and now and len(before | now) == 1:
            return True
    return False


#: What a run records about the interpreter and the machine, matched as the package versions are.
MACHINE = ("python", "cpu", "torch_threads")


def reproduces(recorded: dict[str, Any], current: dict[str, Any], algo: str, by_digest: bool = True) -> str | None:
    """
    Why a run of ``algo`` recorded under ``recorded`` would not be reproduced now, or None if it would: a package
    version, the Python version, the CPU model or the torch threads differ, or the algorithm's code or the harness do
    and the harness digests of the two (:func:`same_behaviour`; not consulted without ``by_digest``) do not show that
    they compute the same numbers.
    """
    if not recorded:
        return "it records no versions"
    changed = [
        f"{name} {recorded['versions'].get(name)} -> {version}"
        for name, version in current["versions"].items()
        if name != "sb3-trpo-ext" and recorded["versions"].get(name) != version
    ]
    changed += [f"{name} {recorded.get(name)} -> {current[name]}" for name in MACHINE if recorded.get(name) != current[name]]

    sources = [("the algorithm's code", "code"), ("the harness", "harness")]
    differing = [(label, key) for label, key in sources if recorded.get(key) != current[key]]
    if differing and not (by_digest and same_behaviour(algo, recorded, current)):
        changed += [f"{label} {recorded.get(key)} -> {current[key]}" for label, key in differing]
    return ", ".join(changed) or None
