"""
How long a Markdown document is, and how long its sentences are: ``python tests/doc_measures.py`` prints both for
README.md and every docs/*.md. Standard library only.

Prose is every line that is not in a fenced code block, a table row, a heading, a blank line or a line of links alone
(images included). Consecutive prose lines form a paragraph; a list item starts a new one. A paragraph is split into
sentences after ``.``, ``?`` or ``!`` followed by a space, and after a period that ends a line; the end of a paragraph
ends its last sentence. Words are whitespace-separated tokens.
"""

import re
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^\s*(```|~~~)")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_LINK = re.compile(r"!?\[[^\]]*\]\([^)]*\)")
_SENTENCE_END = re.compile(r"(?<=[.?!]) +|(?<=\.)\n")


class Measures(NamedTuple):
    lines: int
    sentences: int
    words: int

    @property
    def words_per_sentence(self) -> float:
        return self.words / self.sentences if self.sentences else 0.0


def _is_link_only(line: str) -> bool:
    """A line whose text, its links taken out, is only spaces and separators."""
    return bool(_LINK.search(line)) and not re.search(r"\w", _LINK.sub("", line))


def paragraphs(text: str) -> list[str]:
    """The prose of ``text``, as paragraphs whose lines are joined by newlines."""
    found: list[list[str]] = []
    current: list[str] = []
    in_code = False

    def close() -> None:
        nonlocal current
        if current:
            found.append(current)
        current = []

    for line in text.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
            close()
            continue
        stripped = line.strip()
        if in_code or not stripped or stripped.startswith(("|", "#")) or _is_link_only(stripped):
            close()
            continue
        if _LIST_ITEM.match(line):
            close()
            stripped = _LIST_ITEM.sub("", line).strip()
        current.append(stripped.removeprefix(">").strip())
    close()
    return ["\n".join(lines) for lines in found]


def sentences(paragraph: str) -> list[str]:
    """The sentences of one paragraph."""
    return [s for s in (piece.strip() for piece in _SENTENCE_END.split(paragraph)) if s]


def measure_text(text: str) -> Measures:
    found = [sentence for paragraph in paragraphs(text) for sentence in sentences(paragraph)]
    return Measures(len(text.splitlines()), len(found), sum(len(sentence.split()) for sentence in found))


def measure(path: Path) -> Measures:
    """The line count, sentence count and word count of the Markdown file at ``path``."""
    return measure_text(path.read_text())


def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main(argv: list[str] | None = None) -> None:
    paths = [Path(arg) for arg in argv] if argv else documents()
    print(f"{'document':<28} {'lines':>6} {'sentences':>10} {'words/sentence':>15}")
    for path in paths:
        m = measure(path)
        name = str(path.relative_to(ROOT)) if path.is_absolute() and path.is_relative_to(ROOT) else str(path)
        print(f"{name:<28} {m.lines:>6} {m.sentences:>10} {m.words_per_sentence:>15.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
