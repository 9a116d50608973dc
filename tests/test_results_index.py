"""benchmarks/results/README.md indexes the folder: every entry is in its table, and every entry the table names exists."""

import fnmatch
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
INDEX = RESULTS / "README.md"
COLUMNS = ["entry", "what it is", "command", "commit", "status"]
STATUSES = ("reported", "development", "check", "archived", "in progress")


def rows(text: str) -> list[list[str]]:
    """The table's rows, header included, each as its stripped cells (an escaped pipe stays inside its cell)."""
    table = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    cells = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table]
    return [row for row in cells if not all(set(cell) <= set("-: ") for cell in row)]  # not the separator line


def names(text: str) -> list[str]:
    """The names in the first column: each name in backticks, `folder/` for a folder, a file's name or glob."""
    return [name for row in rows(text)[1:] for name in re.findall(r"`([^`]+)`", row[0])]


def entries(folder: Path) -> list[str]:
    """The folder's top-level entries, folders as `name/`; the index itself and hidden files left out."""
    return sorted(
        path.name + "/" if path.is_dir() else path.name
        for path in folder.iterdir()
        if path.name != INDEX.name and not path.name.startswith(".")
    )


def unindexed(text: str, folder: Path) -> list[str]:
    """The entries of the folder that no name of the index matches."""
    indexed = names(text)
    return [entry for entry in entries(folder) if not any(fnmatch.fnmatchcase(entry, name) for name in indexed)]


def absent(text: str, folder: Path) -> list[str]:
    """The names of the index that match no entry of the folder (a folder's name only a folder, a file's only files)."""
    present = entries(folder)
    return [name for name in names(text) if not any(fnmatch.fnmatchcase(entry, name) for entry in present)]


def malformed(text: str) -> list[str]:
    """What is wrong with the table's shape: its header, and each row without five cells or a known status."""
    header, *body = rows(text) or [[]]
    problems = [] if header == COLUMNS else [f"header {header}"]
    problems += [row[0] for row in body if len(row) != len(COLUMNS) or not row[-1].startswith(STATUSES)]
    return problems + ([] if body else ["no rows"])


def test_every_entry_of_the_results_folder_is_indexed():
    assert unindexed(INDEX.read_text(), RESULTS) == []


def test_every_entry_the_index_names_exists():
    assert absent(INDEX.read_text(), RESULTS) == []


def test_the_index_has_its_columns_and_a_status_in_every_row():
    assert malformed(INDEX.read_text()) == []


def test_each_check_fails_where_it_should():
    text = INDEX.read_text()
    assert "| `npg/` |" in text and "`zoo_acrobot.jsonl`," in text
    assert unindexed(text.replace("| `npg/` |", "| `npg-renamed/` |"), RESULTS) == ["npg/"]
    assert absent(text.replace("| `npg/` |", "| `npg-renamed/` |"), RESULTS) == ["npg-renamed/"]
    assert unindexed(text.replace("`zoo_acrobot.jsonl`,", ""), RESULTS) == ["zoo_acrobot.jsonl"]
    # A glob stands for the files it matches; a folder's name does not stand for a file, nor a file's for a folder.
    assert unindexed(text.replace("`zoo_acrobot.jsonl`,", "`zoo_acro*.jsonl`,"), RESULTS) == []
    assert absent(text.replace("| `npg/` |", "| `npg` |"), RESULTS) == ["npg"]
    assert absent(text.replace("`zoo_acrobot.jsonl`,", "`zoo_acrobot.jsonl/`,"), RESULTS) == ["zoo_acrobot.jsonl/"]
    assert malformed(text.replace("| commit |", "| commits |")) == [f"header {[*COLUMNS[:3], 'commits', COLUMNS[4]]}"]
    assert malformed(text.replace("| 5df7396 | check |", "| 5df7396 | verified |")) == ["`mujoco-1m-repro/`"]
    assert malformed(text.replace("| 5df7396 | check |", "| check |")) == ["`mujoco-1m-repro/`"]
    assert malformed("no table") == ["header []", "no rows"]
