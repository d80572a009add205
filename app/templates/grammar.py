"""Strict grammar for tenant-authored Handlebars templates, checked before pybars ever sees them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TypeAlias

MAX_TEMPLATE_CHARS = 20_000
# pybars needs ~1.7 ms per mustache to compile, so this cap bounds one compile to about a second.
MAX_MUSTACHES = 500
MAX_PATH_SEGMENTS = 6
MAX_SUBEXPRESSION_DEPTH = 4
MAX_BLOCK_DEPTH = 8
MAX_HELPER_ARGUMENTS = 16
# Python refuses int() on more than 4300 digits; real templates never need long literals.
MAX_NUMBER_CHARS = 30
MAX_REPORTED_ERRORS = 20

# name -> (minimum, maximum) argument count; None means unbounded.
HELPER_ARITY: dict[str, tuple[int, int | None]] = {
    "eq": (2, 2),
    "gte": (2, 2),
    "lte": (2, 2),
    "gt": (2, 2),
    "lt": (2, 2),
    "and": (2, None),
    "or": (2, None),
    "not": (1, 1),
    "abs": (1, 1),
}
BLOCK_NAMES = frozenset({"if", "unless", "each"})
# Names pybars or Handlebars give a meaning of their own; as path segments they would reach helpers,
# scope objects or JavaScript prototypes instead of context data.
RESERVED_NAMES = frozenset(
    {"this", "else", "null", "undefined", "true", "false", "with", "lookup", "log",
     "helperMissing", "blockHelperMissing", "constructor", "prototype", *BLOCK_NAMES,
     *HELPER_ARITY}
)

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_WORD = re.compile(r"[A-Za-z0-9_.]+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_FORBIDDEN_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_WHITESPACE = " \t\r\n"
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
_OPENING_PROBLEMS = {
    "{": "triple-stash '{{{' is not allowed",
    "&": "unescaped output '{{&' is not allowed",
    ">": "partials '{{>' are not allowed",
    "~": "whitespace control '{{~' is not allowed",
    "^": "inverse sections '{{^' are not allowed; use {{#unless}}",
    "*": "decorators '{{*' are not allowed",
}


class TemplateError(ValueError):
    """A template broke the grammar; the message names each problem and its position."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


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


@dataclass(frozen=True)
class TextNode:
    """Literal text between mustaches."""

    text: str


@dataclass(frozen=True)
class CommentNode:
    """A {{! comment }}; its content is dropped."""


@dataclass(frozen=True)
class OutputNode:
    """{{path}} or {{helper ...}}: prints a value."""

    expr: PathExpr | HelperCall


@dataclass(frozen=True)
class BlockNode:
    """{{#if}}, {{#unless}} or {{#each}} with its body and optional {{else}} part."""

    name: str
    argument: PathExpr | HelperCall
    body: tuple[Node, ...]
    inverse: tuple[Node, ...] | None


Node: TypeAlias = TextNode | CommentNode | OutputNode | BlockNode


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "string", "number", "word"
    text: str
    offset: int


@dataclass
class _OpenBlock:
    name: str
    argument: PathExpr | HelperCall
    offset: int
    body: list[Node] = field(default_factory=list)
    inverse: list[Node] | None = None


class _Reject(Exception):
    """Aborts parsing of one mustache with a positioned message."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


class _Parser:
    """Single pass over the source: splits text from mustaches and builds the block tree."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []
        self.root: list[Node] = []
        self.stack: list[_OpenBlock] = []
        self.mustaches = 0
        self.depth_reported = False

    def where(self, offset: int) -> str:
        line = self.source.count("\n", 0, offset) + 1
        column = offset - (self.source.rfind("\n", 0, offset) + 1) + 1
        return f"line {line}, column {column}"

    def error(self, offset: int, message: str) -> None:
        self.errors.append(f"{message} (at {self.where(offset)})")

    def full(self) -> bool:
        return len(self.errors) >= MAX_REPORTED_ERRORS

    def target(self) -> list[Node]:
        if not self.stack:
            return self.root
        top = self.stack[-1]
        return top.inverse if top.inverse is not None else top.body

    def run(self) -> None:
        source = self.source
        if len(source) > MAX_TEMPLATE_CHARS:
            self.errors.append(
                f"template is {len(source)} characters long; the limit is {MAX_TEMPLATE_CHARS}"
            )
            return
        bad = _FORBIDDEN_CHARACTER.search(source)
        if bad:
            self.error(bad.start(), f"control character {bad.group()!r} is not allowed")
            return
        position = 0
        while position < len(source) and not self.full():
            opening = source.find("{{", position)
            closing = source.find("}}", position)
            if closing != -1 and (opening == -1 or closing < opening):
                self.error(closing, "'}}' without a matching '{{'")
                position = closing + 2
                continue
            if opening == -1:
                self.target().append(TextNode(source[position:]))
                break
            if opening > position:
                self.target().append(TextNode(source[position:opening]))
            if source.endswith("\\", 0, opening):
                self.error(opening - 1, "backslash escapes ('\\{{') are not allowed")
            position = self.mustache(opening)
        for block in reversed(self.stack):
            self.error(block.offset, f"'{{{{#{block.name}}}}}' is never closed")

    def mustache(self, opening: int) -> int:
        source = self.source
        marker = source[opening + 2 : opening + 3]
        if source.startswith("{{{{", opening):
            self.error(opening, "raw blocks '{{{{' are not allowed")
            return self.skip_past_close(opening)
        if marker in _OPENING_PROBLEMS:
            self.error(opening, _OPENING_PROBLEMS[marker])
            return self.skip_past_close(opening)
        self.mustaches += 1
        if self.mustaches > MAX_MUSTACHES:
            self.error(opening, f"more than {MAX_MUSTACHES} '{{{{ }}}}' expressions")
            return len(source)
        if marker == "!":
            return self.comment(opening)
        closing = source.find("}}", opening + 2)
        if closing == -1:
            self.error(opening, "'{{' is never closed with '}}'")
            return len(source)
        nested = source.find("{{", opening + 2, closing)
        if nested != -1:
            self.error(opening, "'{{' is not closed before the next '{{'")
            return nested
        inner = source[opening + 2 : closing]
        end = self.after_close(closing + 2)
        if "{" in inner or "}" in inner:
            self.error(opening, "braces are not allowed inside '{{ }}'")
            return end
        try:
            self.tag(inner, opening + 2)
        except _Reject as rejected:
            self.error(rejected.offset, rejected.message)
        return end

    def comment(self, opening: int) -> int:
        source = self.source
        long_form = source.startswith("{{!--", opening)
        terminator = "--}}" if long_form else "}}"
        body_start = opening + (5 if long_form else 3)
        closing = source.find(terminator, body_start)
        if closing == -1:
            self.error(opening, "comment is never closed")
            return len(source)
        body = source[body_start:closing]
        if "{{" in body or "}}" in body:
            self.error(opening, "comments may not contain '{{' or '}}'")
        self.target().append(CommentNode())
        return self.after_close(closing + len(terminator))

    def after_close(self, position: int) -> int:
        if self.source.startswith("}", position):
            self.error(position, "'}}}' is not allowed")
            return position + 1
        return position

    def skip_past_close(self, opening: int) -> int:
        closing = self.source.find("}}", opening + 2)
        return len(self.source) if closing == -1 else closing + 2

    def tag(self, inner: str, offset: int) -> None:
        stripped = inner.strip(_WHITESPACE)
        start = offset + len(inner) - len(inner.lstrip(_WHITESPACE))
        if not stripped:
            raise _Reject(offset, "empty '{{ }}'")
        if stripped[0] == "#":
            self.open_block(stripped[1:], start + 1)
        elif stripped[0] == "/":
            self.close_block(stripped[1:].strip(_WHITESPACE), start)
        elif stripped.split()[0] == "else":
            self.else_branch(stripped, start)
        else:
            tokens = _lex(stripped, start)
            expr = _parse_head(tokens, start)
            self.target().append(OutputNode(expr))

    def open_block(self, text: str, offset: int) -> None:
        tokens = _lex(text, offset)
        if not tokens or tokens[0].kind != "word":
            raise _Reject(offset, "a block must name 'if', 'unless' or 'each'")
        name = tokens[0].text
        if name not in BLOCK_NAMES:
            raise _Reject(offset, f"'#{name}' blocks are not allowed (only #if, #unless, #each)")
        arguments, position = _parse_arguments(tokens, 1, 0)
        if len(arguments) != 1:
            raise _Reject(offset, f"'#{name}' takes exactly one argument, got {len(arguments)}")
        argument = arguments[0]
        if name == "each" and not isinstance(argument, PathExpr):
            raise _Reject(offset, "'#each' needs a path to a list")
        if not isinstance(argument, PathExpr | HelperCall):
            raise _Reject(offset, f"'#{name}' needs a path or a (helper ...) sub-expression")
        if len(self.stack) >= MAX_BLOCK_DEPTH and not self.depth_reported:
            self.depth_reported = True
            self.error(offset, f"blocks are nested more than {MAX_BLOCK_DEPTH} deep")
        self.stack.append(_OpenBlock(name, argument, offset - 1))

    def close_block(self, name: str, offset: int) -> None:
        if not self.stack:
            raise _Reject(offset, f"'{{{{/{name}}}}}' closes a block that was never opened")
        top = self.stack[-1]
        if name != top.name:
            raise _Reject(
                offset,
                f"'{{{{/{name}}}}}' does not match '{{{{#{top.name}}}}}' "
                f"opened at {self.where(top.offset)}",
            )
        self.stack.pop()
        inverse = tuple(top.inverse) if top.inverse is not None else None
        self.target().append(BlockNode(top.name, top.argument, tuple(top.body), inverse))

    def else_branch(self, text: str, offset: int) -> None:
        if text != "else":
            raise _Reject(offset, "'{{else ...}}' chains are not allowed; nest another block")
        if not self.stack:
            raise _Reject(offset, "'{{else}}' outside a block")
        top = self.stack[-1]
        if top.inverse is not None:
            raise _Reject(offset, f"second '{{{{else}}}}' in '{{{{#{top.name}}}}}'")
        top.inverse = []


def _lex(text: str, offset: int) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    while index < len(text):
        char = text[index]
        start = offset + index
        if char in _WHITESPACE:
            index += 1
            continue
        if char == "(":
            tokens.append(_Token(char, char, start))
            index += 1
            continue
        if char == ")":
            tokens.append(_Token(char, char, start))
            index += 1
        elif char in "\"'":
            end = text.find(char, index + 1)
            if end == -1:
                raise _Reject(start, "string is never closed")
            body = text[index + 1 : end]
            if any(bad in body for bad in "\\\r\n"):
                raise _Reject(start, "strings may not contain backslashes or line breaks")
            tokens.append(_Token("string", body, start))
            index = end + 1
        elif char.isdigit() or (char == "-" and text[index + 1 : index + 2].isdigit()):
            match = _NUMBER.match(text, index)
            assert match is not None
            if len(match.group()) > MAX_NUMBER_CHARS:
                raise _Reject(start, f"number literal longer than {MAX_NUMBER_CHARS} characters")
            tokens.append(_Token("number", match.group(), start))
            index = match.end()
        elif char.isascii() and (char.isalpha() or char == "_"):
            match = _WORD.match(text, index)
            assert match is not None
            tokens.append(_Token("word", match.group(), start))
            index = match.end()
        else:
            raise _Reject(start, _character_problem(char))
        following = text[index : index + 1]
        if following and following not in _WHITESPACE and following != ")":
            raise _Reject(offset + index, _character_problem(following))
    return tokens


def _character_problem(char: str) -> str:
    return _CHARACTER_PROBLEMS.get(char, f"unexpected character {char!r}")


def _parse_head(tokens: list[_Token], offset: int) -> PathExpr | HelperCall:
    first = tokens[0]
    if first.kind != "word" or first.text in ("true", "false"):
        raise _Reject(first.offset, "'{{ }}' must start with a path or a helper name")
    if first.text in HELPER_ARITY:
        arguments, _ = _parse_arguments(tokens, 1, 0)
        return _helper_call(first, arguments)
    if len(tokens) > 1:
        raise _Reject(first.offset, _unknown_helper(first.text))
    return _path(first)


def _parse_arguments(tokens: list[_Token], index: int, depth: int) -> tuple[list[Expr], int]:
    """Parses arguments until a ')' (inside a sub-expression) or the end of the tokens."""
    arguments: list[Expr] = []
    while index < len(tokens):
        token = tokens[index]
        if token.kind == ")":
            if depth == 0:
                raise _Reject(token.offset, "unbalanced ')'")
            return arguments, index
        if len(arguments) >= MAX_HELPER_ARGUMENTS:
            raise _Reject(token.offset, f"more than {MAX_HELPER_ARGUMENTS} arguments")
        argument, index = _parse_argument(tokens, index, depth)
        arguments.append(argument)
    if depth > 0:
        raise _Reject(tokens[-1].offset if tokens else 0, "'(' is never closed with ')'")
    return arguments, index


def _parse_argument(tokens: list[_Token], index: int, depth: int) -> tuple[Expr, int]:
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
        raise _Reject(token.offset, f"sub-expressions nested more than {MAX_SUBEXPRESSION_DEPTH}")
    if index + 1 >= len(tokens) or tokens[index + 1].kind != "word":
        raise _Reject(token.offset, "a sub-expression must start with a helper name")
    name = tokens[index + 1]
    if name.text not in HELPER_ARITY:
        raise _Reject(name.offset, _unknown_helper(name.text))
    arguments, closing = _parse_arguments(tokens, index + 2, depth + 1)
    return _helper_call(name, arguments), closing + 1


def _helper_call(name: _Token, arguments: list[Expr]) -> HelperCall:
    minimum, maximum = HELPER_ARITY[name.text]
    if len(arguments) < minimum or (maximum is not None and len(arguments) > maximum):
        wanted = f"at least {minimum}" if maximum is None else str(minimum)
        raise _Reject(
            name.offset, f"'{name.text}' takes {wanted} argument(s), got {len(arguments)}"
        )
    return HelperCall(name.text, tuple(arguments))


def _unknown_helper(name: str) -> str:
    allowed = ", ".join(HELPER_ARITY)
    return f"unknown helper '{name}' (allowed: {allowed})"


def _path(token: _Token) -> PathExpr:
    segments = token.text.split(".")
    if len(segments) > MAX_PATH_SEGMENTS:
        raise _Reject(token.offset, f"path has more than {MAX_PATH_SEGMENTS} segments")
    for segment in segments:
        if not segment:
            raise _Reject(token.offset, f"empty segment in path '{token.text}'")
        if segment.startswith("_"):
            raise _Reject(token.offset, f"names starting with '_' are not allowed ('{segment}')")
        if segment in RESERVED_NAMES:
            raise _Reject(token.offset, f"'{segment}' is a reserved name and cannot be a path")
        if not _IDENTIFIER.fullmatch(segment):
            raise _Reject(token.offset, f"'{segment}' is not a valid name")
    return PathExpr(tuple(segments))


def parse_template(source: str) -> tuple[Node, ...]:
    """Parses a template into its node tree, raising TemplateError on any grammar violation."""
    if not isinstance(source, str):
        raise TemplateError([f"template must be a string, got {type(source).__name__}"])
    parser = _Parser(source)
    parser.run()
    if parser.errors:
        raise TemplateError(parser.errors)
    return tuple(parser.root)


def check_template(source: str) -> list[str]:
    """Returns the grammar errors of a template; an empty list means it is safe to compile."""
    try:
        parse_template(source)
    except TemplateError as error:
        return error.errors
    return []


def assert_valid_template(source: str) -> None:
    """Raises TemplateError unless the template follows the grammar."""
    parse_template(source)
