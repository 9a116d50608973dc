"""The docs read in one pass: short sentences on every docs/*.md page, and docs/benchmarks.md of a bounded length, by
the measures of tests/doc_measures.py."""

import pytest
from doc_measures import ROOT, Measures, documents, main, measure, measure_text, paragraphs, sentences

PAGES = [path for path in documents() if path.parent.name == "docs"]

SAMPLE = """# A heading, not prose

One two three. Four five
six seven.
Eight nine? Ten!

| a table | not prose |
|---|---|
| one. two. | three. |

```python
x = 1. y = 2.
```

[a link](elsewhere.md) · [another](other.md)
![an image](figure.png)

- A list item of seven words here
- Another one. With two.
"""


def test_the_measures_of_a_known_text():
    # Sentences: "One two three." (3), "Four five six seven." (4, ended by the line-final period), "Eight nine?" (2),
    # "Ten!" (1), the first list item (7, ended by the item's end), "Another one." (2), "With two." (2).
    assert paragraphs(SAMPLE) == [
        "One two three. Four five\nsix seven.\nEight nine? Ten!",
        "A list item of seven words here",
        "Another one. With two.",
    ]
    assert sentences(paragraphs(SAMPLE)[0]) == ["One two three.", "Four five\nsix seven.", "Eight nine?", "Ten!"]
    measures = measure_text(SAMPLE)
    assert measures == Measures(lines=19, sentences=7, words=21)
    assert measures.words_per_sentence == 3.0


def test_code_tables_headings_and_links_alone_are_not_prose():
    assert measure_text("# Title\n\n```\nOne. Two. Three.\n```\n| a. | b. |\n[x](y.md)\n") == Measures(7, 0, 0)
    assert measure_text("").words_per_sentence == 0.0
    # A sentence broken over lines is one sentence; a period inside a number or a path ends nothing.
    assert measure_text("It took 0.5 s in\ndocs/algorithm.md and more.\n") == Measures(2, 1, 8)


def test_docs_benchmarks_is_short_with_short_sentences():
    measures = measure(ROOT / "docs" / "benchmarks.md")
    assert measures.lines <= 250, measures
    assert measures.words_per_sentence <= 25, measures


def test_every_page_of_the_docs_is_measured():
    names = {path.name for path in PAGES}
    assert {"benchmarks.md", "benchmark-history.md", "performance.md", "testing.md", "variants.md", "zoo.md"} <= names
    assert names == {path.name for path in (ROOT / "docs").glob("*.md")}


@pytest.mark.parametrize("page", PAGES, ids=[path.name for path in PAGES])
def test_every_page_of_the_docs_has_short_sentences(page):
    measures = measure(page)
    assert measures.words_per_sentence <= 25, f"{page.name}: {measures.words_per_sentence:.1f} words a sentence"


def test_main_prints_every_document(capsys):
    main()
    printed = capsys.readouterr().out
    for name in ["README.md", "docs/benchmarks.md", "docs/benchmark-history.md"]:
        assert name in printed
