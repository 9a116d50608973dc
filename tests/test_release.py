"""The release files agree with pyproject.toml, the one place that states the version."""

import re
from pathlib import Path

import pytest
import yaml

import sb3_trpo_ext

tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def test_the_package_reports_pyproject_s_version():
    # Read from the installed metadata: a stale install (pyproject.toml changed since) fails here too.
    assert sb3_trpo_ext.__version__ == VERSION


def test_the_licence_is_mit_and_shipped():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert PYPROJECT["project"]["license"] == "MIT"
    assert "LICENSE" in PYPROJECT["project"]["license-files"]


def test_the_citation_file_names_the_version():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert str(citation["version"]) == VERSION
    assert citation["license"] == "MIT"


def test_py_typed_is_in_the_package_and_its_data():
    assert (ROOT / "sb3_trpo_ext" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["sb3_trpo_ext"]


def test_the_changelog_s_latest_release_is_this_version_on_the_citation_s_date():
    # Keep a Changelog: "## [Unreleased]" may come first, then releases newest first as "## [X.Y.Z] - YYYY-MM-DD".
    changelog = (ROOT / "CHANGELOG.md").read_text()
    headings = [h for h in re.findall(r"^## (.*)$", changelog, flags=re.MULTILINE) if h != "[Unreleased]"]
    assert headings, "CHANGELOG.md has no release heading"
    release = re.fullmatch(r"\[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})", headings[0])
    assert release, f"the latest release heading {headings[0]!r} is not '## [X.Y.Z] - YYYY-MM-DD'"
    version, date = release.groups()
    assert version == VERSION
    assert date == str(yaml.safe_load((ROOT / "CITATION.cff").read_text())["date-released"])


def test_the_readme_s_title_names_the_version():
    assert (ROOT / "README.md").read_text().splitlines()[0] == f"# sb3-trpo-ext {VERSION}"
