"""Snippets: the passage's best lines as plain text, whatever Markdown the chunk carries."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.knowledge.search import _MARKUP, _plain, make_snippet


def test_a_snippet_shows_the_line_that_answers_without_its_markup() -> None:
    content = ("## Discount approval\n"
               "- Discounts up to **10%** need the *CSM lead*.\n"
               "| Above 20% | the `VP of Sales` signs |")
    assert make_snippet(content, "who approves a discount above 20%") == (
        "Discount approval Discounts up to 10% need the CSM lead. Above 20% | the VP of Sales"
        " signs")
    assert make_snippet(content, "VP of Sales") == "Above 20% | the VP of Sales signs"


def test_a_long_line_is_cut_at_a_word_with_an_ellipsis() -> None:
    snippet = make_snippet("renewal " * 100, "renewal", max_chars=40)
    assert snippet == "renewal renewal renewal renewal renewal …"


# Lines mixing words, spaces and every character the markup expression knows.
LINES = st.text(alphabet=st.sampled_from(list("ab c-+>*_`#|\t")), max_size=60)


@given(LINES)
def test_the_shortcut_for_lines_without_markup_leaves_what_the_expression_would(
        line: str) -> None:
    assert _plain(line) == _MARKUP.sub("", line).strip()
