"""Sphinx configuration of the documentation site: the guides and the API reference, all pages MyST Markdown."""

import importlib.metadata
import inspect
import re
from pathlib import Path
from typing import Any

import sb3_trpo_ext
from sb3_trpo_ext.natural_gradient import NaturalGradientAlgorithm

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
#: The repository on GitHub, as pyproject.toml's project.urls give it.
SOURCE = dict(url.split(", ", 1) for url in importlib.metadata.metadata("sb3-trpo-ext").get_all("Project-URL") or [])["Source"]

project = "sb3-trpo-ext"
author = "sb3-trpo-ext contributors"
copyright = "sb3-trpo-ext contributors"
release = sb3_trpo_ext.__version__
version = release

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
# Pages only: not the build output, nor what Python leaves beside this file.
exclude_patterns = ["_build", "**/__pycache__", ".DS_Store"]

html_theme = "sphinx_rtd_theme"
html_title = f"sb3-trpo-ext {release}"

# The guides' headings get GitHub's anchors, so that links to them work on GitHub and here alike.
myst_heading_anchors = 3

# Class pages as SB3's: the docstring's :param fields, and signatures without type hints (the parameters' text says
# what they take; SB3's long unions would crowd the signature).
autodoc_typehints = "none"

# A link from a guide or the README to a file of the repository outside docs/ (benchmarks/results/*.md, the
# CHANGELOG) goes to that file on GitHub: the site has no page for it. Images stay local (Sphinx copies them).
_LINK = re.compile(r"(?<!!)(\[[^\]]*\])\(([^)\s#]+)(#[^)\s]*)?\)")


def _repository_links(text: str, folder: Path) -> str:
    def link(match: re.Match) -> str:
        label, target, anchor = match.group(1), match.group(2), match.group(3) or ""
        if re.match(r"[a-z]+:", target):  # a URL
            return match.group(0)
        path = (folder / target).resolve()
        if not path.is_relative_to(ROOT) or path.is_relative_to(DOCS) or not path.exists():
            return match.group(0)  # a page of the site, or a link Sphinx should warn about
        return f"{label}({SOURCE}/blob/main/{path.relative_to(ROOT).as_posix()}{anchor})"

    return _LINK.sub(link, text)


def _page_read(app: Any, docname: str, content: list[str]) -> None:
    content[0] = _repository_links(content[0], (DOCS / docname).parent)


def _include_read(app: Any, relative_path: Path, parent_docname: str, content: list[str]) -> None:
    content[0] = _repository_links(content[0], (DOCS / relative_path).parent)


def _constructor_signature(app: Any, what: str, name: str, obj: Any, options: Any, signature: str, annotation: str):
    """The algorithms' ``__new__`` takes ``*args, **kwargs`` (to name a keyword they refuse); show ``__init__``'s."""
    if what == "class" and inspect.isclass(obj) and issubclass(obj, NaturalGradientAlgorithm):
        init = inspect.signature(obj.__init__)
        parameters = [p.replace(annotation=p.empty) for p in init.parameters.values() if p.name != "self"]
        return str(init.replace(parameters=parameters, return_annotation=init.empty)), annotation
    return None


def setup(app: Any) -> None:
    app.connect("source-read", _page_read)
    app.connect("include-read", _include_read)
    app.connect("autodoc-process-signature", _constructor_signature)
