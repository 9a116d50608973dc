"""What a new user meets first: missing extras, the command lines' help, and the README's first example."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sb3_trpo_ext.extras import EXTRAS, MissingExtraError, env_extra, missing_modules, require

README = Path(__file__).resolve().parent.parent / "README.md"


def run_without(modules: list[str], code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which ``modules`` cannot be imported, as without their extra."""
    blocked = "; ".join(f"sys.modules[{module!r}] = None" for module in modules)
    return subprocess.run(
        [sys.executable, "-c", f"import sys; {blocked}\n{code}"], capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_naming(result: subprocess.CompletedProcess, extra: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line and not line.startswith("WARNING")]
    assert len(lines) == 1, result.stderr
    assert f'pip install "sb3-trpo-ext[{extra}]" (from a checkout: pip install ".[{extra}]")' in lines[0]


def test_help_needs_no_extra():
    result = run_without(["yaml", "rl_zoo3", "optuna"], "from sb3_trpo_ext.zoo.cli import main; main(['--help'])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: sb3-trpo-ext") and "Traceback" not in result.stderr


def test_zoo_commands_without_the_zoo_extra_name_it():
    result = run_without(["yaml", "rl_zoo3"], "from sb3_trpo_ext.zoo.cli import main; main(['train', '--env', 'CartPole-v1'])")
    assert_one_line_naming(result, "zoo")


def test_the_benchmark_without_the_bench_extra_names_it():
    result = run_without(["pandas"], "import runpy; runpy.run_module('sb3_trpo_ext.benchmark', run_name='__main__')")
    assert_one_line_naming(result, "bench")


def test_the_benchmark_checks_its_tasks_dependencies_before_it_starts():
    code = (
        "import sys; sys.argv = ['b', '--quick', '--envs', 'CartPole-v1', 'HalfCheetah-v5', '--output', 'unused'];"
        "import runpy; runpy.run_module('sb3_trpo_ext.benchmark', run_name='__main__')"
    )
    result = run_without(["mujoco"], code, timeout=60)
    assert_one_line_naming(result, "mujoco")
    assert "HalfCheetah-v5" in result.stderr and "runs," not in result.stdout  # nothing ran


def test_register_without_rl_zoo3_raises_an_import_error_naming_the_extra():
    result = run_without(["rl_zoo3"], "from sb3_trpo_ext.zoo import register; register()")
    assert "MissingExtraError" in result.stderr
    assert 'pip install "sb3-trpo-ext[zoo]" (from a checkout: pip install ".[zoo]")' in result.stderr


def test_tasks_are_mapped_to_the_extra_they_need():
    assert env_extra("HalfCheetah-v5") == "mujoco"
    assert env_extra("LunarLander-v3") == "box2d"
    assert env_extra("CartPole-v1") is None and env_extra("NoSuchTask-v0") is None


def test_require_names_the_missing_modules(monkeypatch):
    monkeypatch.setitem(sys.modules, "seaborn", None)
    assert missing_modules("plots") == ["seaborn"]
    message = r'missing: seaborn\): pip install "sb3-trpo-ext\[plots\]" \(from a checkout: pip install "\.\[plots\]"\)$'
    with pytest.raises(MissingExtraError, match=message):
        require("plots", "plotting")
    assert issubclass(MissingExtraError, ImportError)
    with pytest.raises(ValueError, match="extra must be one of"):
        missing_modules("gpu")


def test_the_extras_table_lists_every_extra_of_pyproject():
    import tomllib

    extras = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)


def test_importing_the_package_leaves_torch_s_threads_alone():
    code = "import torch; before = torch.get_num_threads(); import sb3_trpo_ext; print(before, torch.get_num_threads())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    before, after = result.stdout.split()
    assert before == after, result.stderr


def test_the_readme_is_a_short_front_page_that_links_only_inside_the_repository():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    assert "shared/" not in text and "spec §" not in text
    root = README.parent
    for document in [README, *sorted((root / "docs").glob("*.md")), root / "CHANGELOG.md"]:
        for target in re.findall(r"\]\(([^)#]+)\)", document.read_text()):
            if "://" not in target:
                assert (document.parent / target).exists(), f"{document.name} links to a missing {target}"


def test_docstrings_cite_documents_of_the_repository():
    package = README.parent / "sb3_trpo_ext"
    for path in package.rglob("*.py"):
        text = path.read_text()
        assert "spec §" not in text, path
        for section in re.findall(r"docs/algorithm\.md (§\d+)", text):
            assert f"## {section} " in (README.parent / "docs" / "algorithm.md").read_text(), (path, section)


def test_ci_tests_exactly_the_floors_pyproject_promises():
    import tomllib

    root = README.parent
    dependencies = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = [f"{name}=={version}" for name, version in (re.match(r"([\w-]+)>=([\d.]+)", d).groups() for d in dependencies)]
    assert len(floors) == len(dependencies) and "sb3-contrib==2.4.0" in floors
    # .ci/run reads the floors from pyproject.toml: run its reading and compare.
    ci = (root / ".ci" / "run").read_text()
    reading = re.search(r"floors=\$\(python3 -c '(.*?)'\)", ci, flags=re.DOTALL).group(1)
    result = subprocess.run([sys.executable, "-c", reading], capture_output=True, text=True, cwd=root, check=True)
    assert result.stdout.split() == floors
    assert "$floors" in ci


def test_ci_installs_the_package_alone_as_a_newcomer_does():
    ci = (README.parent / ".ci" / "run").read_text()
    base = ci[: ci.index('-e ".[tests]"')]
    # The wheel built from the checkout's sdist, alone (no extra) in a fresh venv after torch's CPU wheel.
    assert "python -m build --outdir" in base and "twine check --strict" in base
    assert 'pip install --quiet torch==2.13.0\n.ci-base-venv/bin/python -m pip install --quiet "$dist"/*.whl\n' in base
    assert "from sb3_trpo_ext import NPG, TRPO, MaskableNPG, MaskableTRPO, RayVecEnv, RecurrentTRPO" in base
    assert 'sb3-trpo-ext" --help' in base and 'tests/snippets.py" "$repo/README.md"' in base
