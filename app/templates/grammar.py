"""Strict grammar for tenant-authored Handlebars templates, checked before pybars ever sees them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TypeAlias

from app.templates.expressions import (
    BLOCK_NAMES,
    WHITESPACE,
    HelperCall,
    PathExpr,
    Reject,
    lex,
    parse_arguments,
    parse_head,
)

MAX_TEMPLATE_CHARS = 20_000
# pybars needs ~1.7 ms per mustache to compile, so this cap bounds one compile to about a second.
MAX_MUSTACHES = 500
MAX_BLOCK_DEPTH = 8
MAX_REPORTED_ERRORS = 20

_FORBIDDEN_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
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


@dataclass
class _OpenBlock:
    name: str
    argument: PathExpr | HelperCall
    offset: int
    body: list[Node] = field(default_factory=list)
    inverse: list[Node] | None = None


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
        except Reject as rejected:
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
        stripped = inner.strip(WHITESPACE)
        start = offset + len(inner) - len(inner.lstrip(WHITESPACE))
        if not stripped:
            raise Reject(offset, "empty '{{ }}'")
        if stripped[0] == "#":
            self.open_block(stripped[1:], start + 1)
        elif stripped[0] == "/":
            self.close_block(stripped[1:].strip(WHITESPACE), start)
        elif stripped.split()[0] == "else":
            self.else_branch(stripped, start)
        else:
            tokens = lex(stripped, start)
            expr = parse_head(tokens)
            self.target().append(OutputNode(expr))

    def open_block(self, text: str, offset: int) -> None:
        tokens = lex(text, offset)
        if not tokens or tokens[0].kind != "word":
            raise Reject(offset, "a block must name 'if', 'unless' or 'each'")
        name = tokens[0].text
        if name not in BLOCK_NAMES:
            raise Reject(offset, f"'#{name}' blocks are not allowed (only #if, #unless, #each)")
        arguments, _ = parse_arguments(tokens, 1, 0)
        if len(arguments) != 1:
            raise Reject(offset, f"'#{name}' takes exactly one argument, got {len(arguments)}")
        argument = arguments[0]
        if name == "each" and not isinstance(argument, PathExpr):
            raise Reject(offset, "'#each' needs a path to a list")
        if not isinstance(argument, PathExpr | HelperCall):
            raise Reject(offset, f"'#{name}' needs a path or a (helper ...) sub-expression")
        if len(self.stack) >= MAX_BLOCK_DEPTH and not self.depth_reported:
            self.depth_reported = True
            self.error(offset, f"blocks are nested more than {MAX_BLOCK_DEPTH} deep")
        self.stack.append(_OpenBlock(name, argument, offset - 1))

    def close_block(self, name: str, offset: int) -> None:
        if not self.stack:
            raise Reject(offset, f"'{{{{/{name}}}}}' closes a block that was never opened")
        top = self.stack[-1]
        if name != top.name:
            raise Reject(
                offset,
                f"'{{{{/{name}}}}}' does not match '{{{{#{top.name}}}}}' "
                f"opened at {self.where(top.offset)}",
            )
        self.stack.pop()
        inverse = tuple(top.inverse) if top.inverse is not None else None
        self.target().append(BlockNode(top.name, top.argument, tuple(top.body), inverse))

    def else_branch(self, text: str, offset: int) -> None:
        if text != "else":
            raise Reject(offset, "'{{else ...}}' chains are not allowed; nest another block")
        if not self.stack:
            raise Reject(offset, "'{{else}}' outside a block")
        top = self.stack[-1]
        if top.inverse is not None:
            raise Reject(offset, f"second '{{{{else}}}}' in '{{{{#{top.name}}}}}'")
        top.inverse = []


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
