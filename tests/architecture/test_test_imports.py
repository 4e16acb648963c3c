"""How the tests are laid out: each test file lives in a sub-package by concern, and no test file (or helper)
imports another test file; what tests share lives in tests/helpers. (Importing a test module runs its
module-level code and fixtures a second time under another name, and ties one concern's tests to another's.)"""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _imported_names(path: Path) -> list[tuple[int, str]]:
    """Every module (and every name taken from a module) an import statement anywhere in the file names, as
    dotted names: `from tests.store import test_store` gives both `tests.store` and `tests.store.test_store`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base.rstrip('.')}.{alias.name}" if base.strip(".") else base + alias.name)
                      for alias in node.names]
    return found


def _names_a_test_module(dotted: str) -> bool:
    return any(part.startswith("test_") or part == "conftest" for part in dotted.split(".") if part)


def test_no_test_file_imports_another_test_file():
    offences = [f"{path.relative_to(TESTS.parent)}:{line}: imports {name}"
                for path in _python_files() for line, name in _imported_names(path) if _names_a_test_module(name)]
    assert offences == [], "move what is shared into tests/helpers:\n" + "\n".join(offences)


def test_test_files_live_in_packages_by_concern():
    flat = [p.name for p in TESTS.glob("test_*.py")]
    assert flat == [], f"test files directly in tests/: {flat} (put each in the sub-package of its concern)"
    for folder in {p.parent for p in _python_files()}:
        assert (folder / "__init__.py").is_file(), f"{folder.relative_to(TESTS.parent)}: no __init__.py"


def test_the_import_check_sees_every_form_of_import(tmp_path):
    """The check itself: each way of naming a test module is caught, helpers and test-named packages are not."""
    source = tmp_path / "sample.py"
    source.write_text("import tests.store.test_store\n"
                      "from test_datafetch import Server\n"
                      "from tests.deploy import test_deploy\n"
                      "from . import test_plan\n"
                      "from .test_spec import BASE\n"
                      "def f():\n    from conftest import RAY_TMPDIR\n"
                      "from tests.helpers.store_cli import SPEC\n"
                      "import pytest\n")
    flagged = sorted({line for line, name in _imported_names(source) if _names_a_test_module(name)})
    assert flagged == [1, 2, 3, 4, 5, 7]
