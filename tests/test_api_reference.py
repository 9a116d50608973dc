"""
The API reference (docs/api/*.md, built by Sphinx in CI) covers the public API: every public name has a page that
names it in an autodoc directive, each algorithm's page lists its methods and policies, every parameter has a
``:param`` line in the docstring the page renders, and the benchmark command's page describes each of its options.
No Sphinx here: the pages and the docstrings are read as text.
"""

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import sb3_trpo_ext
from sb3_trpo_ext import safe_loading, zoo
from sb3_trpo_ext.natural_gradient import NaturalGradientAlgorithm

API = Path(__file__).resolve().parent.parent / "docs" / "api"

#: An autodoc directive (in an eval-rst block): its kind, its target and the indented options below it.
_DIRECTIVE = re.compile(r"^\.\. auto(\w+):: +(\S+)\n((?:[ \t]+:[\w-]+:.*\n)*)", flags=re.MULTILINE)
#: Methods every algorithm's page lists, as SB3's pages do.
METHODS = {"learn", "predict", "save", "load"}


def directives(api: Path = API) -> list[tuple[str, str, str, dict[str, str]]]:
    """Each autodoc directive of the pages under ``api``: its page's name, its kind, its target and its options."""
    found = []
    for page in sorted(api.glob("*.md")):
        for match in _DIRECTIVE.finditer(page.read_text()):
            options = dict(re.findall(r":([\w-]+):[ \t]*(.*)", match.group(3)))
            found.append((page.name, match.group(1), match.group(2), options))
    return found


def resolve(dotted: str) -> Any:
    """The object a dotted name stands for: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(dotted)


def pages_naming(module: Any, name: str, found: list[tuple[str, str, str, dict[str, str]]]) -> list[str]:
    """The pages with a directive for ``module.name``: its full name, or another path to the same object."""
    obj = getattr(module, name)
    return [page for page, _, target, _ in found if target.rsplit(".", 1)[-1] == name and resolve(target) is obj]


PUBLIC = [
    *[(sb3_trpo_ext, name) for name in sb3_trpo_ext.__all__],
    *[(safe_loading, name) for name in safe_loading.__all__],
    (zoo, "register"),
]
ALGORITHMS = [
    getattr(sb3_trpo_ext, name)
    for name in sb3_trpo_ext.__all__
    if inspect.isclass(getattr(sb3_trpo_ext, name)) and issubclass(getattr(sb3_trpo_ext, name), NaturalGradientAlgorithm)
]
#: What the pages document with its parameters: the algorithms, RayVecEnv, the safe-loading functions, zoo.register.
WITH_PARAMETERS = [
    *ALGORITHMS,
    sb3_trpo_ext.RayVecEnv,
    *[getattr(safe_loading, name) for name in safe_loading.__all__ if inspect.isfunction(getattr(safe_loading, name))],
    zoo.register,
]


def test_the_directives_are_found():
    found = directives()
    assert len(found) >= 20, found
    assert {kind for _, kind, _, _ in found} >= {"class", "function", "exception", "data"}
    assert {"NPG", "TRPO", "MaskableNPG", "MaskableTRPO", "RecurrentTRPO"} == {cls.__name__ for cls in ALGORITHMS}


@pytest.mark.parametrize("module,name", PUBLIC, ids=[f"{module.__name__}.{name}" for module, name in PUBLIC])
def test_every_public_name_has_a_page(module, name):
    assert pages_naming(module, name, directives()), f"no page under docs/api has an autodoc directive for {name}"


def test_every_directive_names_something_that_imports():
    for page, _, target, _ in directives():
        try:
            resolve(target)
        except (ImportError, AttributeError) as error:
            pytest.fail(f"docs/api/{page} documents {target}, which does not import: {error}")


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=[cls.__name__ for cls in ALGORITHMS])
def test_each_algorithm_has_its_page_with_its_methods_and_policies(algorithm):
    found = directives()
    own = [(page, options) for page, kind, target, options in found if kind == "class" and resolve(target) is algorithm]
    assert len(own) == 1, f"{algorithm.__name__} is documented on {len(own)} pages"
    page, options = own[0]
    members = {member.strip() for member in options.get("members", "").split(",")}
    assert members >= METHODS, f"docs/api/{page} lists {sorted(members)} of {algorithm.__name__}, not {sorted(METHODS)}"
    for alias, policy in algorithm.policy_aliases.items():
        assert any(
            p == page and target.rsplit(".", 1)[-1] == alias and resolve(target) is policy for p, _, target, _ in found
        ), f"docs/api/{page} does not document {algorithm.__name__}'s policy {alias!r} ({policy.__name__})"


def _parameters(obj: Any) -> list[str]:
    signature = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in signature.parameters.values() if p.name != "self" and p.kind not in variadic]


@pytest.mark.parametrize("obj", WITH_PARAMETERS, ids=[obj.__name__ for obj in WITH_PARAMETERS])
def test_every_parameter_has_a_param_line(obj):
    doc = obj.__doc__ or ""
    missing = [name for name in _parameters(obj) if not re.search(rf"^\s*:param {name}:", doc, flags=re.MULTILINE)]
    assert not missing, f"{obj.__name__}'s docstring has no ':param NAME:' line for {missing}"


def test_the_algorithms_parameters_are_many():
    """The parameter check above is not vacuous: TRPO's constructor has its thirty-odd parameters."""
    assert len(_parameters(sb3_trpo_ext.TRPO)) >= 30
    assert "line_search_max_iter" in _parameters(sb3_trpo_ext.MaskableTRPO)
    assert "line_search_max_iter" not in _parameters(sb3_trpo_ext.NPG)


def test_the_benchmark_page_describes_every_option(capsys):
    pytest.importorskip("pandas", reason="the benchmark command needs the bench extra")
    from sb3_trpo_ext.benchmark.cli import DEFAULT_ENVS, parse_args
    from sb3_trpo_ext.benchmark.settings import ALGORITHMS as BENCHMARK_ALGORITHMS

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = capsys.readouterr().out
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", help_text.split("options:", 1)[1]))
    text = (API / "benchmark.md").read_text()
    described = re.findall(r"^```\{option\} (.*)$", text, flags=re.MULTILINE)
    on_the_page = {flag for signature in described for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", signature)}
    assert options == on_the_page, f"options: {sorted(options)}; docs/api/benchmark.md: {sorted(on_the_page)}"
    for name in [*DEFAULT_ENVS, *BENCHMARK_ALGORITHMS]:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"docs/api/benchmark.md omits {name}"


def test_each_parameter_is_written_once():
    """An algorithm's own docstring gives only the parameters it documents differently from the classes it is built
    from; its full docstring takes the rest from them (so a change is made in one place)."""
    from sb3_trpo_ext.docstrings import parameter_lines
    from sb3_trpo_ext.maskable import Maskable

    classes = [NaturalGradientAlgorithm, Maskable, *ALGORITHMS]
    written: dict[str, list[str]] = {}
    for cls in classes:
        _, own, _ = parameter_lines(vars(cls).get("_own_doc", cls.__doc__))
        for lines in own.values():
            written.setdefault("\n".join(lines), []).append(cls.__name__)
    assert {text: owners for text, owners in written.items() if len(owners) > 1} == {}
    _, trpo, _ = parameter_lines(sb3_trpo_ext.TRPO.__doc__)
    _, maskable, _ = parameter_lines(sb3_trpo_ext.MaskableTRPO.__doc__)
    assert maskable["target_kl"] == trpo["target_kl"] and maskable["policy"] != trpo["policy"]
