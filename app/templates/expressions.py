"""The expression language inside '{{ }}': paths, literals and the nine helpers, strictly."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

MAX_PATH_SEGMENTS = 6
MAX_SUBEXPRESSION_DEPTH = 4
MAX_HELPER_ARGUMENTS = 16
# Python refuses int() on more than 4300 digits; real templates never need long literals.
MAX_NUMBER_CHARS = 30

# name -> (minimum, maximum) argument count; None means unbounded.
HELPER_ARITY: dict[str, tuple[int, int | None]] = {
    "eq": (2, 2), "gte": (2, 2), "lte": (2, 2), "gt": (2, 2), "lt": (2, 2),
    "and": (2, None), "or": (2, None), "not": (1, 1), "abs": (1, 1),
}
BLOCK_NAMES = frozenset({"if", "unless", "each"})
# Names pybars or Handlebars give a meaning of their own; as path segments they would reach helpers,
# scope objects or JavaScript prototypes instead of context data.
RESERVED_NAMES = frozenset(
    {"this", "else", "null", "undefined", "true", "false", "with", "lookup", "log",
     "helperMissing", "blockHelperMissing", "constructor", "prototype", *BLOCK_NAMES,
     *HELPER_ARITY}
)
WHITESPACE = " \t\r\n"

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_WORD = re.compile(r"[A-Za-z0-9_.]+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_CHARACTER_PROBLEMS = {
    "@": "data variables such as '@root' or '@index' are not allowed",
    "[": "bracket path segments '[...]' are not allowed",
    "]": "bracket path segments '[...]' are not allowed",
    ".": "relative paths ('./', '../') are not allowed",
    "/": "'/' path separators are not allowed",
    "=": "hash arguments ('key=value') are not allowed",
    "~": "whitespace control '~' is not allowed",
    "|": "block parameters ('as |x|') are not allowed",
    "\\": "backslashes are not allowed inside '{{ }}'",
}


@dataclass(frozen=True)
class PathExpr:
    """A dotted lookup into the render context, e.g. customer.name."""

    segments: tuple[str, ...]


@dataclass(frozen=True)
class StringLiteral:
    """A quoted string argument (never contains backslashes, newlines or braces)."""

    value: str


@dataclass(frozen=True)
class NumberLiteral:
    """An integer or decimal argument, kept as its source text."""

    text: str


@dataclass(frozen=True)
class BoolLiteral:
    """A true/false argument."""

    value: bool


@dataclass(frozen=True)
class HelperCall:
    """One of the allowed helpers applied to arguments."""

    name: str
    arguments: tuple[Expr, ...]


Expr: TypeAlias = PathExpr | StringLiteral | NumberLiteral | BoolLiteral | HelperCall


class Reject(Exception):
    """Aborts parsing of one mustache with a positioned message."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


@dataclass(frozen=True)
class Token:
    """One lexed piece of a mustache: "(", ")", "string", "number" or "word"."""

    kind: str
    text: str
    offset: int


def lex(text: str, offset: int) -> list[Token]:
    """Splits the inside of a mustache into tokens; offset positions errors in the template."""
    tokens: list[Token] = []
    index = 0
    while index < len(text):
        char = text[index]
        start = offset + index
        if char in WHITESPACE:
            index += 1
            continue
        if char == "(":
            tokens.append(Token(char, char, start))
            index += 1
            continue
        if char == ")":
            tokens.append(Token(char, char, start))
            index += 1
        elif char in "\"'":
            end = text.find(char, index + 1)
            if end == -1:
                raise Reject(start, "string is never closed")
            body = text[index + 1 : end]
            if any(bad in body for bad in "\\\r\n"):
                raise Reject(start, "strings may not contain backslashes or line breaks")
            tokens.append(Token("string", body, start))
            index = end + 1
        elif char.isdigit() or (char == "-" and text[index + 1 : index + 2].isdigit()):
            match = _NUMBER.match(text, index)
            assert match is not None
            if len(match.group()) > MAX_NUMBER_CHARS:
                raise Reject(start, f"number literal longer than {MAX_NUMBER_CHARS} characters")
            tokens.append(Token("number", match.group(), start))
            index = match.end()
        elif char.isascii() and (char.isalpha() or char == "_"):
            match = _WORD.match(text, index)
            assert match is not None
            tokens.append(Token("word", match.group(), start))
            index = match.end()
        else:
            raise Reject(start, _character_problem(char))
        following = text[index : index + 1]
        if following and following not in WHITESPACE and following != ")":
            raise Reject(offset + index, _character_problem(following))
    return tokens


def _character_problem(char: str) -> str:
    return _CHARACTER_PROBLEMS.get(char, f"unexpected character {char!r}")


def parse_head(tokens: list[Token]) -> PathExpr | HelperCall:
    """Parses an output mustache: a lone path, or an allowed helper with its arguments."""
    first = tokens[0]
    if first.kind != "word" or first.text in ("true", "false"):
        raise Reject(first.offset, "'{{ }}' must start with a path or a helper name")
    if first.text in HELPER_ARITY:
        arguments, _ = parse_arguments(tokens, 1, 0)
        return _helper_call(first, arguments)
    if len(tokens) > 1:
        raise Reject(first.offset, _unknown_helper(first.text))
    return _path(first)


def parse_arguments(tokens: list[Token], index: int, depth: int) -> tuple[list[Expr], int]:
    """Parses arguments until a ')' (inside a sub-expression) or the end of the tokens."""
    arguments: list[Expr] = []
    while index < len(tokens):
        token = tokens[index]
        if token.kind == ")":
            if depth == 0:
                raise Reject(token.offset, "unbalanced ')'")
            return arguments, index
        if len(arguments) >= MAX_HELPER_ARGUMENTS:
            raise Reject(token.offset, f"more than {MAX_HELPER_ARGUMENTS} arguments")
        argument, index = _parse_argument(tokens, index, depth)
        arguments.append(argument)
    if depth > 0:
        raise Reject(tokens[-1].offset if tokens else 0, "'(' is never closed with ')'")
    return arguments, index


def _parse_argument(tokens: list[Token], index: int, depth: int) -> tuple[Expr, int]:
    token = tokens[index]
    if token.kind == "string":
        return StringLiteral(token.text), index + 1
    if token.kind == "number":
        return NumberLiteral(token.text), index + 1
    if token.kind == "word":
        if token.text in ("true", "false"):
            return BoolLiteral(token.text == "true"), index + 1
        return _path(token), index + 1
    # token.kind == "(": a sub-expression
    if depth + 1 > MAX_SUBEXPRESSION_DEPTH:
        raise Reject(token.offset, f"sub-expressions nested more than {MAX_SUBEXPRESSION_DEPTH}")
    if index + 1 >= len(tokens) or tokens[index + 1].kind != "word":
        raise Reject(token.offset, "a sub-expression must start with a helper name")
    name = tokens[index + 1]
    if name.text not in HELPER_ARITY:
        raise Reject(name.offset, _unknown_helper(name.text))
    arguments, closing = parse_arguments(tokens, index + 2, depth + 1)
    return _helper_call(name, arguments), closing + 1


def _helper_call(name: Token, arguments: list[Expr]) -> HelperCall:
    minimum, maximum = HELPER_ARITY[name.text]
    if len(arguments) < minimum or (maximum is not None and len(arguments) > maximum):
        wanted = f"at least {minimum}" if maximum is None else str(minimum)
        raise Reject(
            name.offset, f"'{name.text}' takes {wanted} argument(s), got {len(arguments)}"
        )
    return HelperCall(name.text, tuple(arguments))


def _unknown_helper(name: str) -> str:
    allowed = ", ".join(HELPER_ARITY)
    return f"unknown helper '{name}' (allowed: {allowed})"


def _path(token: Token) -> PathExpr:
    segments = token.text.split(".")
    if len(segments) > MAX_PATH_SEGMENTS:
        raise Reject(token.offset, f"path has more than {MAX_PATH_SEGMENTS} segments")
    for segment in segments:
        if not segment:
            raise Reject(token.offset, f"empty segment in path '{token.text}'")
        if segment.startswith("_"):
            raise Reject(token.offset, f"names starting with '_' are not allowed ('{segment}')")
        if segment in RESERVED_NAMES:
            raise Reject(token.offset, f"'{segment}' is a reserved name and cannot be a path")
        if not _IDENTIFIER.fullmatch(segment):
            raise Reject(token.offset, f"'{segment}' is not a valid name")
    return PathExpr(tuple(segments))
