"""Registry mapping `code:`/`file:` handler references to callables, built once at start-up.

Database rows name handlers; letting them drive imports or attribute walks would hand code
execution to whoever can write a row. So the registry scans the `handlers` package once, keeps a
frozen dict of every public handler, and request-time resolution is syntax checks plus a lookup.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

HANDLERS_PACKAGE = "handlers"
CODE_SCHEME = "code"
FILE_SCHEME = "file"
MAX_REFERENCE_CHARS = 200
# Modules in handlers/ that hold shared types, not handlers; never addressable as file: handlers.
NON_HANDLER_MODULES = frozenset({"types"})

_NAME_SEGMENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_HANDLER_FILE_NAME = re.compile(r"[a-z][a-z0-9_]*\.py")
_SHOWN_CHARS = 80

Handler = Callable[..., Any]


class HandlerReferenceError(ValueError):
    """A handler reference is malformed, forbidden or names nothing registered."""


class HandlerRegistryError(RuntimeError):
    """The handlers package cannot be turned into a registry; start-up must fail."""


class HandlerRegistry:
    """Immutable map from canonical handler reference to callable."""

    __slots__ = ("_handlers",)

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        """Wrap an already-built map; every key must itself be a well-formed reference."""
        for reference in handlers:
            problem = reference_syntax_error(reference)
            if problem is not None:
                raise HandlerRegistryError(f"cannot register {_shown(reference)}: {problem}")
        self._handlers: Mapping[str, Handler] = MappingProxyType(dict(handlers))

    @classmethod
    def build(cls, package_dir: Path | None = None) -> HandlerRegistry:
        """Import the `handlers` package and its handler modules once and index their handlers.

        Args:
            package_dir: the directory expected to hold the package; defaults to where
                `handlers` is imported from, and must be that directory when given.
        """
        package = importlib.import_module(HANDLERS_PACKAGE)
        imported_dir = _package_directory(package)
        if package_dir is not None and Path(os.path.realpath(package_dir)) != imported_dir:
            raise HandlerRegistryError(
                f"package_dir {package_dir} is not where `{HANDLERS_PACKAGE}` is imported from "
                f"({imported_dir})"
            )
        handlers = {**_code_handlers(package), **_file_handlers(imported_dir)}
        return cls(handlers)

    def resolve(self, reference: str) -> Handler:
        """Return the callable a reference names; raise HandlerReferenceError otherwise."""
        problem = reference_syntax_error(reference)
        if problem is not None:
            raise HandlerReferenceError(problem)
        handler = self._handlers.get(reference)
        if handler is None:
            raise HandlerReferenceError(self._unknown_message(reference))
        return handler

    def validate(self, reference: str) -> None:
        """Raise HandlerReferenceError unless the reference resolves; call before storing one."""
        self.resolve(reference)

    def references(self) -> list[str]:
        """Return every resolvable reference, sorted."""
        return sorted(self._handlers)

    def _unknown_message(self, reference: str) -> str:
        """Explain an unknown reference and list the known ones of the same scheme."""
        scheme = reference.split(":", 1)[0]
        known = [ref for ref in sorted(self._handlers) if ref.startswith(f"{scheme}:")]
        listing = ", ".join(known) if known else "none"
        return f"unknown handler {_shown(reference)}; known {scheme} handlers: {listing}"


def reference_syntax_error(reference: object) -> str | None:
    """Return why a reference is malformed or forbidden, or None when its form is acceptable."""
    if not isinstance(reference, str):
        return "handler reference must be text"
    if not reference:
        return "handler reference is empty"
    if len(reference) > MAX_REFERENCE_CHARS:
        return f"handler reference is longer than {MAX_REFERENCE_CHARS} characters"
    # Control and format characters (NUL, newlines, bidi overrides) are never echoed back.
    if any(unicodedata.category(char).startswith("C") for char in reference):
        return "handler reference contains control characters (for example NUL)"
    if any(char.isspace() for char in reference):
        return "handler reference contains whitespace"
    if not reference.isascii():
        return "handler reference must be ASCII (look-alike characters are refused)"
    if ":" not in reference:
        return "handler reference has no scheme; expected code:Class.method or file:handlers/x.py"
    scheme, body = reference.split(":", 1)
    if scheme not in (CODE_SCHEME, FILE_SCHEME):
        if scheme.lower() in (CODE_SCHEME, FILE_SCHEME):
            return f"scheme {_shown(scheme)} must be lowercase ({CODE_SCHEME}: or {FILE_SCHEME}:)"
        return f"unknown scheme {_shown(scheme)}; expected {CODE_SCHEME}: or {FILE_SCHEME}:"
    problem = _forbidden_sequence(body)
    if problem is not None:
        return problem
    return _code_body_error(body) if scheme == CODE_SCHEME else _file_body_error(body)


def _forbidden_sequence(body: str) -> str | None:
    """Refuse the traversal, escaping and private-name tricks, whatever the scheme."""
    if not body:
        return "handler reference names nothing after the scheme"
    if "%" in body:
        return "percent-encoding is not allowed in handler references"
    if "\\" in body:
        return "backslashes are not allowed in handler references"
    if "~" in body:
        return "'~' is not allowed in handler references"
    if ".." in body:
        return "'..' is not allowed in handler references"
    if "__" in body:
        return "dunder names are not allowed in handler references"
    if body.startswith("/"):
        return "absolute paths are not allowed in handler references"
    if ":" in body:
        return "handler reference has more than one scheme separator"
    return None


def _code_body_error(body: str) -> str | None:
    """Check the `Class.method` part of a code: reference."""
    segments = body.split(".")
    if len(segments) != 2 or not all(segments):
        return "code handlers are named code:Class.method (exactly two names)"
    if any(segment.startswith("_") for segment in segments):
        return "private names (leading '_') are not allowed in code handlers"
    if not all(_NAME_SEGMENT.fullmatch(segment) for segment in segments):
        return "code handler names are letters, digits and underscores"
    return None


def _file_body_error(body: str) -> str | None:
    """Check the `handlers/<name>.py` part of a file: reference."""
    parts = body.split("/")
    if parts[0] != HANDLERS_PACKAGE:
        return f"file handlers live in {HANDLERS_PACKAGE}/ (file:{HANDLERS_PACKAGE}/<name>.py)"
    if len(parts) != 2 or not parts[1]:
        return f"file handlers live directly in {HANDLERS_PACKAGE}/, not in subdirectories"
    name = parts[1]
    if name.startswith(("_", ".")):
        return "private or hidden files are not handlers"
    if not name.endswith(".py"):
        if name.lower().endswith(".py"):
            return "the extension must be lowercase .py"
        return "file handlers are Python modules ending in .py"
    if name != name.lower():
        return "file handler names are lowercase"
    if not _HANDLER_FILE_NAME.fullmatch(name):
        return "file handler names are lowercase letters, digits and underscores"
    return None


def _package_directory(package: ModuleType) -> Path:
    """Return the real directory a regular package was imported from."""
    init_file = getattr(package, "__file__", None)
    if not init_file:
        raise HandlerRegistryError(f"`{HANDLERS_PACKAGE}` must be a regular package")
    return Path(os.path.realpath(init_file)).parent


def _code_handlers(package: ModuleType) -> dict[str, Handler]:
    """Index every public routine defined on the classes the package lists in CODE_NAMESPACE."""
    namespace = getattr(package, "CODE_NAMESPACE", None)
    if not isinstance(namespace, dict):
        raise HandlerRegistryError(f"`{HANDLERS_PACKAGE}.CODE_NAMESPACE` must be a dict")
    handlers: dict[str, Handler] = {}
    for class_name, handler_class in namespace.items():
        if not isinstance(class_name, str) or not inspect.isclass(handler_class):
            raise HandlerRegistryError("CODE_NAMESPACE maps class names to classes")
        # vars(): only what the class itself defines, never inherited `object` machinery.
        for attribute_name in vars(handler_class):
            reference = f"{CODE_SCHEME}:{class_name}.{attribute_name}"
            if reference_syntax_error(reference) is not None:
                continue
            attribute = getattr(handler_class, attribute_name)
            if inspect.isroutine(attribute):
                handlers[reference] = attribute
    return handlers


def _file_handlers(package_dir: Path) -> dict[str, Handler]:
    """Import each plain handler module directly in the package dir and index its `setup`."""
    handlers: dict[str, Handler] = {}
    with os.scandir(package_dir) as entries:
        candidates = sorted(entries, key=lambda entry: entry.name)
    for entry in candidates:
        stem = entry.name.removesuffix(".py")
        if not _HANDLER_FILE_NAME.fullmatch(entry.name) or stem in NON_HANDLER_MODULES:
            continue
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            continue
        real_path = Path(os.path.realpath(entry.path))
        if real_path.parent != package_dir:
            continue
        module = importlib.import_module(f"{HANDLERS_PACKAGE}.{stem}")
        module_file = getattr(module, "__file__", None)
        # A same-named subpackage would shadow the file; refuse rather than expose the wrong code.
        if not module_file or Path(os.path.realpath(module_file)) != real_path:
            raise HandlerRegistryError(f"{HANDLERS_PACKAGE}.{stem} did not load {entry.name}")
        setup = vars(module).get("setup")
        if inspect.isfunction(setup) and setup.__module__ == module.__name__:
            handlers[f"{FILE_SCHEME}:{HANDLERS_PACKAGE}/{entry.name}"] = setup
    return handlers


def _shown(text: str) -> str:
    """Quote user text for an error message: escaped, and shortened when long."""
    clipped = text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}..."
    return ascii(clipped)
