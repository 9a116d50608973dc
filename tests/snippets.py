"""
The Python blocks of README.md, docs/*.md and docs/api/*.md, and how they are run: by the test suite at a reduced budget
(tests/test_docs.py), and by CI's base-install job at full budget (``python tests/snippets.py README.md``, which also
checks each block's output against the "This prints `...`" that follows it in the document). Standard library only:
the base install has no test dependencies.
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "api").glob("*.md"))]

#: A block is run at most this many environment steps (``learn(N)``, ``total_timesteps=N``) by the test suite...
BUDGET = 2048
#: ... with at most this many environments (``n_envs=N``): a cluster's sizes on a laptop's cores.
MAX_ENVS = 8

_BLOCK = re.compile(r"^```python\n(.*?)^```\n(?P<after>(?:[^\n]*\n){0,3})", flags=re.DOTALL | re.MULTILINE)
_BUDGET = re.compile(r"(\.learn\(|total_timesteps=)(\d[\d_]*)")
_N_ENVS = re.compile(r"(n_envs=)(\d[\d_]*)")


def python_blocks(document: Path) -> list[tuple[int, str, str]]:
    """Each ```python block of ``document``: its first line's number, its code, and the text just after it."""
    text = document.read_text()
    return [(text.count("\n", 0, match.start()) + 2, match.group(1), match.group("after")) for match in _BLOCK.finditer(text)]


def shortened(code: str, budget: int = BUDGET, max_envs: int = MAX_ENVS) -> str:
    """``code`` with every training budget at most ``budget`` steps and every ``n_envs`` at most ``max_envs``."""
    code = _BUDGET.sub(lambda m: f"{m.group(1)}{min(int(m.group(2)), budget)}", code)
    return _N_ENVS.sub(lambda m: f"{m.group(1)}{min(int(m.group(2)), max_envs)}", code)


def run_block(code: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter, in a fresh folder outside the checkout (so that the installed package is the
    one imported, and blocks run at once do not share the files they write), with one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as folder:
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env, cwd=folder
        )


def promised_output(after: str) -> str | None:
    """What the document says a block prints ("This prints `...`" right after it), or None."""
    match = re.search(r"prints `([^`]+)`", after)
    return match.group(1) if match else None


def main(paths: list[str]) -> int:
    """Run every Python block of the given documents at full budget; fail on an error or a broken promise."""
    failures = 0
    for path in paths:
        for line, code, after in python_blocks(Path(path)):
            result = run_block(code)
            promised = promised_output(after)
            broken = result.returncode != 0 or (promised is not None and promised not in result.stdout)
            failures += broken
            status = "FAILED" if broken else "ok"
            print(f"{path}:{line}: {status}" + (f" (prints {promised!r})" if promised else ""), flush=True)
            print(result.stdout, end="")
            if broken:
                print(result.stderr, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
