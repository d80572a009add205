"""Split documents into token-bounded, overlapping chunks that keep their section context.

Sizes are counted with the offline tiktoken encoding (app.llm.tokens). The default of 200
tokens keeps every chunk inside the 256 word-piece window of the local MiniLM embedder (which
would silently truncate longer input) and makes a handful of results fit a prompt comfortably.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.llm.tokens import count_text, get_encoding

DEFAULT_MAX_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 40

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
# Lines that stand on their own: list items, numbered steps, table rows, quotes.
_LINE_ITEM = re.compile(r"^\s*(?:[-*+]\s|\d+[.)]\s|\||>)")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(*\[])")
_BLANK_LINES = re.compile(r"\n\s*\n")
_SEPARATOR = "\n"
_SEPARATOR_TOKENS = 1


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, in document order."""

    index: int
    content: str
    token_count: int


@dataclass(frozen=True)
class _Unit:
    """The smallest piece the packer moves: a sentence, a list line or a heading."""

    text: str
    tokens: int
    section: tuple[str, ...]  # headings above this unit (its own heading excluded)
    is_heading: bool = False


def chunk_text(
    text: str,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
) -> list[Chunk]:
    """Chunks of at most `max_tokens`, each starting with the headings it sits under.

    A chunk that is cut for size repeats the last sentences (up to `overlap_tokens`) of the one
    before it, so a fact split across the cut is whole in at least one chunk. A new top-level
    section (heading level 1-2) starts a new chunk without overlap: it is a new topic.
    The result depends only on the input, so re-ingesting the same text gives the same chunks.
    """
    if max_tokens < 16:
        raise ValueError("max_tokens must be at least 16")
    if not 0 <= overlap_tokens < max_tokens // 2:
        raise ValueError("overlap_tokens must be between 0 and max_tokens / 2")
    normalised = _normalise(text)
    units = _units(normalised, max_tokens)
    # A document of headings only still gets a chunk: stored text must stay findable.
    pieces = _pack(units, max_tokens, overlap_tokens) or ([normalised] if normalised else [])
    chunks: list[Chunk] = []
    for piece in pieces:
        for part in _enforce_limit(piece, max_tokens):
            chunks.append(Chunk(len(chunks), part, count_text(part)))
    return chunks


def _normalise(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip()


def _units(text: str, max_tokens: int) -> list[_Unit]:
    """Headings, list lines and sentences, each tagged with the headings above it."""
    units: list[_Unit] = []
    headings: dict[int, str] = {}
    # Units never exceed half a chunk, so that the section line and a neighbour still fit.
    unit_limit = max(8, max_tokens // 2)
    for block in _BLANK_LINES.split(text):
        prose: list[str] = []
        for line in block.split("\n"):
            heading = _HEADING.match(line)
            if heading or _LINE_ITEM.match(line):
                units += _sentences(" ".join(prose), headings, unit_limit)
                prose = []
            if heading:
                level, title = len(heading.group(1)), heading.group(2).strip()
                section = tuple(headings[lv] for lv in sorted(headings) if lv < level)
                units.append(_Unit(line.strip(), count_text(line.strip()), section, True))
                headings = {lv: t for lv, t in headings.items() if lv < level}
                headings[level] = title
            elif _LINE_ITEM.match(line):
                units += _split_long(line.strip(), _section(headings), unit_limit)
            elif line.strip():
                prose.append(line.strip())
        units += _sentences(" ".join(prose), headings, unit_limit)
    return units


def _section(headings: dict[int, str]) -> tuple[str, ...]:
    return tuple(headings[level] for level in sorted(headings))


def _sentences(prose: str, headings: dict[int, str], limit: int) -> list[_Unit]:
    if not prose:
        return []
    section = _section(headings)
    units: list[_Unit] = []
    for sentence in _SENTENCE_END.split(prose):
        if sentence.strip():
            units += _split_long(sentence.strip(), section, limit)
    return units


def _split_long(text: str, section: tuple[str, ...], limit: int) -> list[_Unit]:
    """A unit over `limit` tokens becomes word windows (or token windows for one huge word)."""
    tokens = count_text(text)
    if tokens <= limit:
        return [_Unit(text, tokens, section)]
    units: list[_Unit] = []
    window: list[str] = []
    used = 0
    for word in text.split():
        cost = count_text(" " + word)
        if cost > limit:
            pieces = _token_windows(word, limit)
            units += [_Unit(part, count_text(part), section) for part in pieces]
            continue
        if window and used + cost > limit:
            units.append(_Unit(" ".join(window), count_text(" ".join(window)), section))
            window, used = [], 0
        window.append(word)
        used += cost
    if window:
        units.append(_Unit(" ".join(window), count_text(" ".join(window)), section))
    return units


def _token_windows(text: str, limit: int) -> list[str]:
    encoding = get_encoding()
    tokens = encoding.encode(text, disallowed_special=())
    return [encoding.decode(tokens[i : i + limit]) for i in range(0, len(tokens), limit)]


def _header(section: tuple[str, ...]) -> str:
    return " > ".join(section)


def _pack(units: list[_Unit], max_tokens: int, overlap_tokens: int) -> list[str]:
    """Greedy packing of units into chunk texts, with sentence-level overlap on size cuts."""
    pieces: list[str] = []
    current: list[_Unit] = []
    used = 0

    def start(first: _Unit) -> int:
        header = _header(first.section)
        return count_text(header) + _SEPARATOR_TOKENS if header else 0

    def flush() -> None:
        if current and not all(u.is_heading for u in current):
            header = _header(current[0].section)
            body = _SEPARATOR.join(u.text for u in current)
            pieces.append(f"{header}{_SEPARATOR}{body}" if header else body)

    for unit in units:
        top_level_heading = unit.is_heading and unit.text.startswith(("# ", "## "))
        if current and top_level_heading:
            flush()
            current, used = [], 0
        cost = unit.tokens + _SEPARATOR_TOKENS
        if current and used + cost > max_tokens:
            flush()
            carried = _overlap(current, overlap_tokens)
            current = carried
            used = start(current[0]) + sum(u.tokens + _SEPARATOR_TOKENS for u in current) \
                if current else 0
            if current and used + cost > max_tokens:
                current, used = [], 0
        if not current:
            used = start(unit)
        current.append(unit)
        used += cost
    flush()
    return pieces


def _overlap(previous: list[_Unit], budget: int) -> list[_Unit]:
    """The trailing sentences of a chunk that fit in `budget` tokens (headings are not carried)."""
    carried: list[_Unit] = []
    used = 0
    for unit in reversed(previous):
        if unit.is_heading or used + unit.tokens + _SEPARATOR_TOKENS > budget:
            break
        carried.insert(0, unit)
        used += unit.tokens + _SEPARATOR_TOKENS
    return carried


def _enforce_limit(piece: str, max_tokens: int) -> list[str]:
    """Tokenisation across joins can differ slightly from the sum of parts: never exceed."""
    if count_text(piece) <= max_tokens:
        return [piece]
    return [part for part in _token_windows(piece, max_tokens) if part.strip()]
