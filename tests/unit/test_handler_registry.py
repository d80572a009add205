"""Handler registry: only start-up-indexed handlers resolve; resolving reads and imports nothing."""

from __future__ import annotations

import builtins
import contextlib
import importlib
import importlib.util
import io
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import handlers
from app.handler_registry import (
    HandlerReferenceError,
    HandlerRegistry,
    HandlerRegistryError,
)
from handlers import rag_search, renewal_qa
from handlers.global_actions import GlobalActions
from handlers.processors import Processors
from handlers.types import HandlerInputError, LlmHandlerInput

REAL_PACKAGE_DIR = Path(handlers.__file__).resolve().parent

BAD_REFERENCES = [
    "",
    " ",
    "code:GlobalActions." + "a" * 200,
    "code:os.system",
    "code:subprocess.run",
    "code:GlobalActions.__init__",
    "code:GlobalActions.__class__",
    "code:GlobalActions._private",
    "code:GlobalActions.snooze.__globals__",
    "code:__builtins__.eval",
    "code:GlobalActions",
    "code:GlobalActions.snooze.extra",
    "code:globalactions.snooze",
    "code:GlobalActions.missing",
    "code:GlobalActions.snooze\n",
    " code:GlobalActions.snooze",
    "code:GlobalActions.\u200bsnooze",
    "code:GlobalActions.snooze:x",
    "python:os.system",
    "handlers/renewal_qa.py",
    "file:../app/main.py",
    "file:handlers/../app/cli.py",
    "file:/etc/passwd",
    "file:handlers/evil.py\x00.py",
    "file:handlers/%2e%2e/x.py",
    "file:handlers\\x.py",
    "file:handlers/sub/x.py",
    "file:handlers/types.py",
    "file:handlers/__init__.py",
    "FILE:handlers/renewal_qa.py",
    "file:handlers/renewal_qa",
    "file:handlers/renewal_qa.js",
    "file:handlers/renewal_qa.PY",
    "file:handlers/Renewal_QA.py",
    "file:handlers/renewal_qa.pyc",
    "file:~/handlers/renewal_qa.py",
    "file:app/main.py",
    "file:handlers//renewal_qa.py",
    "file:handlers/_llm_context.py",
    "file:handlers/.hidden.py",
    "file:handlers/global_actions.py",
    "file:handlers/\uff52enewal_qa.py",
    "file:handlers/renewal_qa.py\u202e",
]

EXPECTED_REFERENCES = {
    "code:GlobalActions.escalate": GlobalActions.escalate,
    "code:GlobalActions.skip": GlobalActions.skip,
    "code:GlobalActions.snooze": GlobalActions.snooze,
    "code:Processors.outcomeClassifier": Processors.outcomeClassifier,
    "code:Processors.riskAssessment": Processors.riskAssessment,
    "file:handlers/rag_search.py": rag_search.setup,
    "file:handlers/renewal_qa.py": renewal_qa.setup,
}


@pytest.fixture(scope="module")
def registry() -> HandlerRegistry:
    return HandlerRegistry.build()


class ForbiddenAtRequestTime(AssertionError):
    """Raised by the guard when resolution touches the import system or the file system."""


@contextlib.contextmanager
def no_imports_or_file_access() -> Iterator[None]:
    """Make every import and file access fail loudly, and check sys.modules is unchanged."""

    def forbid(*args: object, **kwargs: object) -> None:
        raise ForbiddenAtRequestTime(f"touched imports or files with {args!r}")

    modules_before = set(sys.modules)
    # patch.object, not patch("a.b"): string targets are themselves resolved by importing.
    targets = [
        (builtins, "open"),
        (io, "open"),
        (os, "open"),
        (os, "scandir"),
        (os, "listdir"),
        (builtins, "__import__"),
        (importlib, "import_module"),
        (importlib.util, "spec_from_file_location"),
    ]
    guarded = threading.get_ident()

    def only_here(original: Any) -> Any:
        # Only the resolving thread is policed: a live test server's thread may import lazily.
        def check(*args: object, **kwargs: object) -> Any:
            if threading.get_ident() == guarded:
                forbid(*args, **kwargs)
            return original(*args, **kwargs)

        return check

    with contextlib.ExitStack() as stack:
        for owner, attribute in targets:
            stack.enter_context(mock.patch.object(
                owner, attribute, side_effect=only_here(getattr(owner, attribute))))
        yield
    assert set(sys.modules) == modules_before


def test_guard_fails_on_file_access_and_imports() -> None:
    with pytest.raises(ForbiddenAtRequestTime), no_imports_or_file_access():
        open(__file__)  # noqa: SIM115
    with pytest.raises(ForbiddenAtRequestTime), no_imports_or_file_access():
        importlib.import_module("json")
    with pytest.raises(ForbiddenAtRequestTime), no_imports_or_file_access():
        __import__("json")


@pytest.mark.parametrize("reference", BAD_REFERENCES, ids=ascii)
def test_bad_reference_is_rejected_without_importing_or_reading(
    registry: HandlerRegistry, reference: str
) -> None:
    with pytest.raises(HandlerReferenceError), no_imports_or_file_access():
        registry.resolve(reference)
    with pytest.raises(HandlerReferenceError), no_imports_or_file_access():
        registry.validate(reference)


def test_at_least_twenty_five_distinct_bad_references_are_covered() -> None:
    assert len(set(BAD_REFERENCES)) >= 25


def test_non_text_reference_is_rejected(registry: HandlerRegistry) -> None:
    with pytest.raises(HandlerReferenceError, match="must be text"):
        registry.resolve(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reference", "explanation"),
    [
        ("", "empty"),
        ("code:GlobalActions." + "a" * 200, "longer than 200"),
        ("file:handlers/evil.py\x00.py", "control characters"),
        ("code:Global Actions.snooze", "whitespace"),
        ("file:handlers/\uff52enewal_qa.py", "ASCII"),
        ("handlers/renewal_qa.py", "no scheme"),
        ("FILE:handlers/renewal_qa.py", "lowercase"),
        ("python:os.system", "unknown scheme"),
        ("file:handlers/%2e%2e/x.py", "percent-encoding"),
        ("file:handlers\\x.py", "backslashes"),
        ("file:~/x.py", "'~'"),
        ("file:handlers/../app/cli.py", "'..'"),
        ("code:GlobalActions.__init__", "dunder"),
        ("file:/etc/passwd", "absolute"),
        ("code:GlobalActions._private", "private"),
        ("code:GlobalActions.snooze.extra", "Class.method"),
        ("file:app/main.py", "live in handlers/"),
        ("file:handlers/sub/x.py", "subdirectories"),
        ("file:handlers/renewal_qa.js", "ending in .py"),
        ("file:handlers/renewal_qa.PY", "lowercase .py"),
        ("file:handlers/Renewal_QA.py", "lowercase"),
        ("code:os.system", "unknown handler"),
        ("file:handlers/types.py", "unknown handler"),
    ],
)
def test_rejection_says_what_was_wrong(
    registry: HandlerRegistry, reference: str, explanation: str
) -> None:
    with pytest.raises(HandlerReferenceError) as error:
        registry.resolve(reference)
    assert explanation in str(error.value)


@pytest.mark.parametrize(
    "reference",
    ["file:handlers/evil.py\x00.py", "code:Global\x1b[31mActions.snooze", "code:a\u202eb.c"],
    ids=ascii,
)
def test_rejection_never_echoes_control_characters(
    registry: HandlerRegistry, reference: str
) -> None:
    with pytest.raises(HandlerReferenceError) as error:
        registry.resolve(reference)
    message = str(error.value)
    assert message.isprintable()
    assert "evil" not in message
    assert "Actions" not in message


def test_unknown_reference_lists_known_handlers_of_its_scheme(registry: HandlerRegistry) -> None:
    with pytest.raises(HandlerReferenceError) as error:
        registry.resolve("code:os.system")
    assert "code:GlobalActions.snooze" in str(error.value)
    assert "file:handlers/renewal_qa.py" not in str(error.value)


@pytest.mark.parametrize(("reference", "expected"), list(EXPECTED_REFERENCES.items()))
def test_good_reference_resolves_to_its_handler_without_importing(
    registry: HandlerRegistry, reference: str, expected: object
) -> None:
    with no_imports_or_file_access():
        handler = registry.resolve(reference)
        registry.validate(reference)
    assert handler is expected


def test_references_lists_exactly_the_public_handlers_sorted(registry: HandlerRegistry) -> None:
    references = registry.references()
    assert references == sorted(EXPECTED_REFERENCES)


def test_every_listed_reference_validates(registry: HandlerRegistry) -> None:
    for reference in registry.references():
        registry.validate(reference)


def test_build_indexes_only_public_routines_defined_on_listed_classes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(GlobalActions, "_hidden", staticmethod(lambda ctx: ctx), raising=False)
    monkeypatch.setattr(
        GlobalActions, "double__under", staticmethod(lambda ctx: ctx), raising=False
    )
    monkeypatch.setattr(GlobalActions, "LIMIT", 5, raising=False)
    monkeypatch.setattr(GlobalActions, "extra", staticmethod(lambda ctx: ctx), raising=False)
    references = HandlerRegistry.build().references()
    assert "code:GlobalActions.extra" in references
    assert not any(
        name in ref for ref in references for name in ("_hidden", "double__under", "LIMIT")
    )
    assert not any(ref.startswith("code:GlobalActions.__") for ref in references)


def test_class_missing_from_code_namespace_is_not_reachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(handlers.CODE_NAMESPACE, "Processors")
    rebuilt = HandlerRegistry.build()
    with pytest.raises(HandlerReferenceError, match="unknown handler"):
        rebuilt.resolve("code:Processors.riskAssessment")


def test_build_refuses_a_directory_other_than_the_imported_package(tmp_path: Path) -> None:
    with pytest.raises(HandlerRegistryError, match="not where"):
        HandlerRegistry.build(package_dir=tmp_path)


def test_registry_refuses_to_register_a_malformed_reference() -> None:
    with pytest.raises(HandlerRegistryError, match="dunder"):
        HandlerRegistry({"code:GlobalActions.__init__": GlobalActions.snooze})


# --- a registry built over a temporary copy of the package -------------------------------------

SENTINEL_MODULE = """
from pathlib import Path
Path({sentinel!r}).write_text("imported")

def setup(inp):
    return None
"""


@pytest.fixture
def package_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Make a copy of handlers/ the importable `handlers` package; restore the real one after."""
    copy = tmp_path / "site" / "handlers"
    shutil.copytree(REAL_PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    saved = {
        name: module
        for name, module in sys.modules.items()
        if name == "handlers" or name.startswith("handlers.")
    }
    for name in saved:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield copy
    for name in [n for n in sys.modules if n == "handlers" or n.startswith("handlers.")]:
        del sys.modules[name]
    sys.modules.update(saved)
    importlib.invalidate_caches()


def write_sentinel_module(path: Path, sentinel: Path) -> None:
    path.write_text(SENTINEL_MODULE.format(sentinel=str(sentinel)))


def test_symlinked_module_would_write_the_sentinel_if_imported(
    package_copy: Path, tmp_path: Path
) -> None:
    outside, sentinel = tmp_path / "outside" / "outside.py", tmp_path / "sentinel"
    outside.parent.mkdir()
    write_sentinel_module(outside, sentinel)
    (package_copy / "evil.py").symlink_to(outside)
    importlib.import_module("handlers.evil")
    assert sentinel.exists()


def test_symlinks_late_files_and_odd_names_in_the_package_never_resolve(
    package_copy: Path, tmp_path: Path
) -> None:
    outside, sentinel = tmp_path / "outside" / "outside.py", tmp_path / "sentinel"
    outside.parent.mkdir()
    write_sentinel_module(outside, sentinel)
    (package_copy / "evil.py").symlink_to(outside)
    (package_copy / "alias.py").symlink_to(package_copy / "renewal_qa.py")
    (package_copy / "sub").mkdir()
    write_sentinel_module(package_copy / "sub" / "inner.py", sentinel)
    write_sentinel_module(package_copy / "Upper.py", sentinel)
    write_sentinel_module(package_copy / "_private.py", sentinel)
    with (package_copy / "types.py").open("a") as types_module:
        types_module.write("\n\ndef setup(inp):\n    return None\n")

    copied_registry = HandlerRegistry.build(package_dir=package_copy)
    write_sentinel_module(package_copy / "late.py", sentinel)

    assert copied_registry.references() == sorted(EXPECTED_REFERENCES)
    for reference in (
        "file:handlers/evil.py",
        "file:handlers/alias.py",
        "file:handlers/late.py",
        "file:handlers/types.py",
    ):
        with pytest.raises(HandlerReferenceError), no_imports_or_file_access():
            copied_registry.resolve(reference)
    assert not sentinel.exists()
    assert "handlers.evil" not in sys.modules
    assert "handlers.late" not in sys.modules
    copied_setup = copied_registry.resolve("file:handlers/renewal_qa.py")
    copied_file = Path(copied_setup.__code__.co_filename).resolve()
    assert copied_file == (package_copy / "renewal_qa.py").resolve()


def test_build_refuses_a_subpackage_shadowing_a_handler_file(package_copy: Path) -> None:
    (package_copy / "shadow.py").write_text("def setup(inp):\n    return None\n")
    (package_copy / "shadow").mkdir()
    (package_copy / "shadow" / "__init__.py").write_text("def setup(inp):\n    return None\n")
    with pytest.raises(HandlerRegistryError, match="did not load shadow.py"):
        HandlerRegistry.build(package_dir=package_copy)


def test_guard_also_blocks_low_level_io() -> None:
    with pytest.raises(ForbiddenAtRequestTime), no_imports_or_file_access():
        os.open(__file__, os.O_RDONLY)
    with pytest.raises(ForbiddenAtRequestTime), no_imports_or_file_access():
        os.scandir(".")


# --- the file: handlers behind the references ----------------------------------------------------

ALL_TOOLS = ["create_chart", "database_query", "rag_search"]
CONTEXT_DATA = {
    "customer": {"id": "c-1", "name": "Acme Corp"},
    "workflow": {"daysUntilRenewal": 5},
    "internalNotes": {"secret": "not for the model"},
}


def llm_input(branch_type: str, tools: list[str]) -> LlmHandlerInput:
    return LlmHandlerInput(
        branch_type=branch_type,  # type: ignore[arg-type]
        system_prompt="You are a renewal assistant.",
        context_data=CONTEXT_DATA,
        tools=tools,
    )


def test_renewal_qa_setup_grounds_answers_in_customer_data(registry: HandlerRegistry) -> None:
    setup = registry.resolve("file:handlers/renewal_qa.py")
    shaped = setup(llm_input("llm", ALL_TOOLS))
    assert shaped.tools == ["database_query", "create_chart"]
    assert "customer's" in shaped.system_prompt_suffix
    assert set(shaped.context_data) == {"customer", "workflow"}


def test_rag_search_setup_requires_citations_and_searches_first(registry: HandlerRegistry) -> None:
    setup = registry.resolve("file:handlers/rag_search.py")
    shaped = setup(llm_input("rag", ALL_TOOLS))
    assert shaped.tools == ["rag_search", "database_query"]
    assert "Cite" in shaped.system_prompt_suffix
    assert "internalNotes" not in shaped.context_data


def test_llm_handlers_never_add_tools_the_service_does_not_offer(
    registry: HandlerRegistry,
) -> None:
    shaped = registry.resolve("file:handlers/renewal_qa.py")(llm_input("llm", ["database_query"]))
    assert shaped.tools == ["database_query"]
    with pytest.raises(HandlerInputError, match="rag_search"):
        registry.resolve("file:handlers/rag_search.py")(llm_input("rag", ["database_query"]))
