"""benchmarks/results/README.md indexes the folder: every entry is in its table, and every entry the table names exists."""

import fnmatch
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
INDEX = RESULTS / "README.md"
COLUMNS = ["entry", "what it is", "command", "commit", "status"]
STATUSES = ("reported", "development", "check", "archived", "in progress")
#: Folders that group what is not reported, by what it is; the index names each entry inside them (``checks/soak/``).
GROUPS = ("development", "checks", "archive")


def rows(text: str) -> list[list[str]]:
    """The table's rows, header included, each as its stripped cells (an escaped pipe stays inside its cell)."""
    table = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    cells = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table]
    return [row for row in cells if not all(set(cell) <= set("-: ") for cell in row)]  # not the separator line


def names(text: str) -> list[str]:
    """The names in the first column: each name in backticks, `folder/` for a folder, a file's name or glob."""
    return [name for row in rows(text)[1:] for name in re.findall(r"`([^`]+)`", row[0])]


def entries(folder: Path) -> list[str]:
    """The folder's entries, folders as `name/`, and those of its groups as `group/name`; the index itself and hidden
    files left out."""
    found = []
    for path in folder.iterdir():
        if path.name == INDEX.name or path.name.startswith("."):
            continue
        inside = path.iterdir() if path.is_dir() and path.name in GROUPS else [path]
        found += [f"{p.relative_to(folder).as_posix()}{'/' if p.is_dir() else ''}" for p in inside]
    return sorted(found)


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
    assert "| `npg/` |" in text and "| `archive/speed-*/` |" in text and "| `checks/soak/` |" in text
    assert unindexed(text.replace("| `npg/` |", "| `npg-renamed/` |"), RESULTS) == ["npg/"]
    assert absent(text.replace("| `npg/` |", "| `npg-renamed/` |"), RESULTS) == ["npg-renamed/"]
    # Inside a group each entry is indexed by its path; a glob stands for the entries it matches.
    assert unindexed(text.replace("| `checks/soak/` |", "| `soak/` |"), RESULTS) == ["checks/soak/"]
    assert unindexed(text.replace("| `archive/speed-*/` |", "| `archive/speed-1*/` |"), RESULTS) == [
        "archive/speed-0c4d184/",
        "archive/speed-203f5fe/",
        "archive/speed-4e267fe/",
        "archive/speed-5b99b49/",
        "archive/speed-819405a/",
        "archive/speed-9511995/",
        "archive/speed-9e88c92/",
        "archive/speed-b69662c/",
        "archive/speed-c9c735f/",
    ]
    # A folder's name does not stand for a file, nor a file's for a folder.
    assert absent(text.replace("| `npg/` |", "| `npg` |"), RESULTS) == ["npg"]
    assert malformed(text.replace("| commit |", "| commits |")) == [f"header {[*COLUMNS[:3], 'commits', COLUMNS[4]]}"]
    assert malformed(text.replace("| 5df7396 | check |", "| 5df7396 | verified |")) == ["`checks/mujoco-1m-repro/`"]
    assert malformed(text.replace("| 5df7396 | check |", "| check |")) == ["`checks/mujoco-1m-repro/`"]
    assert malformed("no table") == ["header []", "no rows"]


def test_every_archived_folder_says_why():
    archived = [path for path in (RESULTS / "archive").iterdir() if path.is_dir()]
    assert archived and [path.name for path in archived if not (path / "REASON.md").is_file()] == []
