"""Every Python block of README.md and docs/*.md runs (at a reduced budget), so that no document drifts from the code."""

import re

import pytest
from snippets import BUDGET, DOCUMENTS, ROOT, promised_output, python_blocks, run_block, shortened

BLOCKS = [(document, line, code) for document in DOCUMENTS for line, code, _ in python_blocks(document)]
PROMISES = [
    (document, line, code, promised_output(after))
    for document in DOCUMENTS
    for line, code, after in python_blocks(document)
    if promised_output(after) is not None
]


def test_the_blocks_are_found():
    by_document = {document.name: sum(d == document for d, _, _ in BLOCKS) for document in DOCUMENTS}
    assert by_document["README.md"] >= 1 and by_document["variants.md"] >= 4 and by_document["scale.md"] >= 1, by_document
    readme = (ROOT / "README.md").read_text()
    assert readme.count("```python") == by_document["README.md"]


def test_shortened_caps_budgets_and_environments_only():
    code = 'm = TRPO("MlpPolicy", make_vec_env("X", n_envs=128), n_steps=256).learn(5_000_000)\nm.learn(total_timesteps=100)\n'
    assert shortened(code, budget=1000, max_envs=8) == (
        'm = TRPO("MlpPolicy", make_vec_env("X", n_envs=8), n_steps=256).learn(1000)\nm.learn(total_timesteps=100)\n'
    )


def test_the_readme_says_what_its_first_example_prints():
    (_, _, after), *_ = python_blocks(ROOT / "README.md")
    assert promised_output(after) == "mean return 500.0 +/- 0.0"
    assert any(document.name == "variants.md" for document, *_ in PROMISES)


@pytest.mark.slow
@pytest.mark.parametrize("document,line,code,promised", PROMISES, ids=[f"{d.name}:{line}" for d, line, *_ in PROMISES])
def test_blocks_print_what_their_document_says_at_full_budget(document, line, code, promised):
    result = run_block(code, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert promised in result.stdout, f"{document.name}:{line} promises {promised!r}, printed {result.stdout!r}"


@pytest.mark.parametrize("document,line,code", BLOCKS, ids=[f"{d.name}:{line}" for d, line, _ in BLOCKS])
def test_every_python_block_runs(document, line, code):
    result = run_block(shortened(code, BUDGET), timeout=300)
    assert result.returncode == 0, f"{document.name}:{line} raised:\n{result.stderr[-3000:]}"


def test_docs_variants_names_every_algorithm_and_every_part_it_is_made_of():
    import inspect

    import sb3_trpo_ext
    from sb3_trpo_ext import kinds, maskable, recurrent, step_rules
    from sb3_trpo_ext.natural_gradient import NaturalGradientAlgorithm

    text = (ROOT / "docs" / "variants.md").read_text()
    algorithms = [name for name in sb3_trpo_ext.__all__ if inspect.isclass(getattr(sb3_trpo_ext, name))]
    algorithms = [name for name in algorithms if issubclass(getattr(sb3_trpo_ext, name), NaturalGradientAlgorithm)]
    assert {"TRPO", "NPG", "MaskableTRPO", "MaskableNPG", "RecurrentTRPO"} <= set(algorithms)
    parts = [
        cls.__name__
        for module in (kinds, maskable, recurrent, step_rules)
        for cls in vars(module).values()
        if inspect.isclass(cls)
        and cls.__module__ == module.__name__
        and issubclass(cls, (kinds.PolicyKind, step_rules.StepRule, NaturalGradientAlgorithm))
    ]
    assert {"PolicyKind", "MaskedPolicy", "RecurrentPolicy", "LineSearch", "WholeStep", "Maskable"} <= set(parts)
    for name in [*algorithms, *parts]:
        assert re.search(rf"[`.]{name}\b", text), f"docs/variants.md does not name {name}"


@pytest.mark.parametrize("document,line,code", BLOCKS, ids=[f"{d.name}:{line}" for d, line, _ in BLOCKS])
def test_every_training_block_sets_one_torch_thread_and_states_its_cost(document, line, code):
    """A training example runs on one torch thread (small networks run many times slower on several threads of a busy
    machine) and says what it costs, in a comment on its ``learn`` line or in the text right after the block."""
    if ".learn(" not in code:
        return
    one_thread = re.search(r"^torch\.set_num_threads\(1\)", code, flags=re.MULTILINE)
    assert one_thread, f"{document.name}:{line} trains on torch's default threads"
    text = document.read_text()
    after = text[text.index(code) + len(code) :][:600]
    learn_lines = [row for row in code.splitlines() if ".learn(" in row]
    cost = r"\b(\d+|a few|half a|a) (s|seconds?|min|minutes?)\b"
    assert any(re.search(rf"#.*{cost}", row) for row in learn_lines) or re.search(cost, after), (
        f"{document.name}:{line} does not say what it costs"
    )
