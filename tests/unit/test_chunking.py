"""Token-aware chunking: size limits, overlap, section context, determinism."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.knowledge.chunking import chunk_text
from app.llm.tokens import count_text
from app.seeding import SEEDS_DIR, parse_document


def numbered_sentences(count: int, start: int = 0) -> list[str]:
    return [f"Sentence number {i} talks about renewal fact {i * 7}." for i in range(start, start + count)]


def test_every_chunk_stays_within_the_token_limit_on_the_seed_documents():
    for path in sorted((SEEDS_DIR / "knowledge").glob("*.md")):
        chunks = chunk_text(parse_document(path)["content"], max_tokens=120, overlap_tokens=30)
        assert chunks, path
        for chunk in chunks:
            assert chunk.token_count == count_text(chunk.content)
            assert chunk.token_count <= 120, (path.name, chunk.content)


def test_chunks_are_numbered_in_document_order():
    text = " ".join(numbered_sentences(60))
    chunks = chunk_text(text, max_tokens=80, overlap_tokens=20)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    firsts = [int(re.search(r"number (\d+)", c.content).group(1)) for c in chunks]
    assert firsts == sorted(firsts) and len(set(firsts)) == len(firsts)


def test_a_chunk_cut_for_size_repeats_the_last_sentences_of_the_previous_one():
    chunks = chunk_text(" ".join(numbered_sentences(40)), max_tokens=80, overlap_tokens=25)
    assert len(chunks) > 2
    for before, after in zip(chunks, chunks[1:]):
        before_lines, after_lines = before.content.split("\n"), after.content.split("\n")
        carried = [line for line in after_lines if line in before_lines]
        # What is carried is the tail of the previous chunk, at the head of the next one.
        assert carried and carried == before_lines[-len(carried):]
        assert after_lines[: len(carried)] == carried
        assert sum(count_text(line) for line in carried) <= 25


def test_no_overlap_when_it_is_switched_off():
    chunks = chunk_text(" ".join(numbered_sentences(40)), max_tokens=80, overlap_tokens=0)
    sentences = [line for c in chunks for line in c.content.split("\n")]
    assert len(sentences) == len(set(sentences)) == 40


def test_no_sentence_is_lost():
    sentences = numbered_sentences(50)
    chunks = chunk_text(" ".join(sentences), max_tokens=64, overlap_tokens=16)
    joined = "\n".join(c.content for c in chunks)
    assert all(s in joined for s in sentences)


def test_chunks_carry_the_headings_they_sit_under():
    text = (
        "# Pricing Policy\n\nIntro paragraph.\n\n## Billing terms\n\n"
        + " ".join(numbered_sentences(30))
    )
    chunks = chunk_text(text, max_tokens=80, overlap_tokens=10)
    continued = [c for c in chunks if "## Billing terms" not in c.content and "Sentence" in c.content]
    assert continued, "the billing section should span several chunks"
    for chunk in continued:
        assert chunk.content.startswith("Pricing Policy > Billing terms\n")


def test_a_new_section_starts_a_new_chunk_without_overlap():
    text = "## First\n\nAlpha fact one. Alpha fact two.\n\n## Second\n\nBeta fact one. Beta fact two."
    chunks = chunk_text(text, max_tokens=200, overlap_tokens=40)
    assert len(chunks) == 2
    assert "Alpha" in chunks[0].content and "Beta" not in chunks[0].content
    assert "Beta" in chunks[1].content and "Alpha" not in chunks[1].content


def test_list_items_and_table_rows_stay_whole():
    rows = [f"| {i} | tier {i} | {i * 5}% |" for i in range(12)]
    text = "Discount tiers:\n\n| Level | Name | Discount |\n|---|---|---|\n" + "\n".join(rows)
    chunks = chunk_text(text, max_tokens=48, overlap_tokens=0)
    lines = {line for c in chunks for line in c.content.split("\n")}
    assert all(row in lines for row in rows)


def test_a_huge_word_is_split_by_tokens():
    blob = "x9" * 2000
    chunks = chunk_text(f"Start. {blob} End.", max_tokens=100, overlap_tokens=10)
    assert all(c.token_count <= 100 for c in chunks)
    assert "".join(c.content for c in chunks).count("x9") >= 1900


def test_the_same_text_always_gives_the_same_chunks():
    text = parse_document(SEEDS_DIR / "knowledge" / "demo-critical-window.md")["content"]
    assert chunk_text(text) == chunk_text(text)


def test_a_document_of_headings_only_still_has_a_chunk():
    assert [c.content for c in chunk_text("# Title\n\n## Section")] == ["# Title\n\n## Section"]


def test_blank_text_has_no_chunks():
    assert chunk_text("  \n\n \t ") == []


@pytest.mark.parametrize(("max_tokens", "overlap"), [(8, 0), (100, 60), (100, -1)])
def test_unusable_sizes_are_rejected(max_tokens, overlap):
    with pytest.raises(ValueError):
        chunk_text("Some text.", max_tokens=max_tokens, overlap_tokens=overlap)


@settings(max_examples=40, deadline=None)
@given(
    text=st.text(
        alphabet=st.sampled_from(list("abcdefghij ABC.,!?\n#-|*0123456789é€")), max_size=3000
    ),
    max_tokens=st.integers(min_value=16, max_value=300),
)
def test_any_text_is_chunked_within_the_limit(text, max_tokens):
    chunks = chunk_text(text, max_tokens=max_tokens, overlap_tokens=max_tokens // 4)
    assert all(0 < c.token_count <= max_tokens for c in chunks)
    if text.strip():
        assert chunks
