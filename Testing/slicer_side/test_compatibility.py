"""Supported Slicer (5.10+) and platforms: the version check, and that an old Slicer can load the module."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from Rad4XCNNLib import compatibility as compat

ROOT = Path(__file__).resolve().parents[2]
MODULE_FILE = ROOT / "Rad4XCNN" / "Rad4XCNN.py"
LOADED_ON_OLD_SLICER = [MODULE_FILE, ROOT / "Rad4XCNN" / "Rad4XCNNLib" / "__init__.py"]
COMPAT_FILE = ROOT / "Rad4XCNN" / "Rad4XCNNLib" / "compatibility.py"


@pytest.mark.parametrize(
    ("slicer_version", "python", "problem"),
    [
        ((5, 10), (3, 12, 4), None),
        ((5, 11), (3, 12, 9), None),
        ((6, 0), (3, 13, 0), None),
        ((5, 8), (3, 9, 10), "needs 3D Slicer 5.10 or later; this is Slicer 5.8 (Python 3.9.10)"),
        ((5, 6), (3, 9, 10), "this is Slicer 5.6"),
        (None, (3, 11, 7), None),  # plain Python (slicer-core): only Python counts
        (None, (3, 9, 18), "needs Python 3.10 or later (3D Slicer 5.10 or later); this Python is 3.9.18"),
    ],
)
def test_slicer_version_problem(slicer_version, python, problem):
    found = compat.slicer_version_problem(slicer_version, python)
    if problem is None:
        assert found is None
    else:
        assert problem in found and "\n" not in found


def test_this_python_is_supported_and_outside_slicer():
    assert compat.running_slicer_version() is None  # slicer-core has no slicer.app
    assert compat.slicer_version_problem(compat.running_slicer_version()) is None


def test_intel_macs_are_refused_with_a_way_out():
    message = compat.platform_problem("Darwin", "x86_64")
    assert "PyTorch 2.4 or later" in message and "2.2.2" in message and "Load results" in message
    assert compat.platform_problem("Darwin", "x86_64", torch_version="2.5.1") is None  # a source build
    assert compat.platform_problem("Darwin", "x86_64", torch_version="2.2.2") is not None
    assert compat.platform_problem("Darwin", "arm64") is None
    assert compat.platform_problem("Linux", "x86_64") is None
    assert compat.platform_problem("Windows", "AMD64") is None


def test_xgboost_without_openmp_gets_a_clear_message():
    error = OSError("dlopen(libxgboost.dylib): Library not loaded: @rpath/libomp.dylib")
    assert "brew install libomp" in compat.xgboost_problem(error, "Darwin")
    assert "libgomp" in compat.xgboost_problem(error, "Linux")
    assert compat.xgboost_problem(OSError("disk full"), "Darwin") is None


def test_translation_uses_slicers_functions_and_stands_in_before_slicer_5_6(monkeypatch):
    import types

    tr, translate = compat.translation_functions()  # slicer-core, like Slicer < 5.6, has no slicer.i18n
    assert tr("Run") == "Run" and translate("qSlicerAbstractCoreModule", "Informatics") == "Informatics"
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr, i18n.translate = (lambda text: f"<{text}>"), (lambda context, text: f"{context}:{text}")
    monkeypatch.setitem(sys.modules, "slicer.i18n", i18n)
    tr, translate = compat.translation_functions()
    assert tr("Run") == "<Run>" and translate("ctx", "Informatics") == "ctx:Informatics"


def test_the_module_checks_the_version_before_importing_the_engine():
    """Everything above ``UNSUPPORTED = ...`` must import on Slicer 5.8: no engine and no Rad4XCNNLib module
    but compatibility; the engine is imported only under ``if UNSUPPORTED is None``."""
    tree = ast.parse(MODULE_FILE.read_text())
    seen = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "UNSUPPORTED" for t in node.targets):
            break
        if isinstance(node, ast.Import):
            seen += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            seen += [f"{node.module}.{alias.name}" for alias in node.names]
    else:
        pytest.fail("Rad4XCNN.py has no UNSUPPORTED = ... check")
    assert "Rad4XCNNLib.compatibility" in seen
    assert not [name for name in seen if name.startswith("Rad4XCNNLogic")]
    assert [name for name in seen if name.startswith("Rad4XCNNLib")] == ["Rad4XCNNLib.compatibility"]
    guarded = next(
        n for n in tree.body if isinstance(n, ast.If) and "UNSUPPORTED is None" in ast.unparse(n.test)
    )
    assert "Rad4XCNNLogic" in ast.unparse(guarded)


def _python39() -> str | None:
    """A working Python 3.9 (pyenv's shims may name one that is not selected: it is run once to check)."""
    candidates = [
        shutil.which("python3.9"),
        *sorted(map(str, Path.home().glob(".pyenv/versions/3.9*/bin/python3.9"))),
    ]
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip() == "(3, 9)":
            return candidate
    return None


PYTHON39 = _python39()


@pytest.mark.skipif(PYTHON39 is None, reason="no Python 3.9 interpreter here (Slicer 5.8's Python)")
def test_an_old_slicer_python_compiles_the_module_and_gets_the_message(tmp_path):
    """With a real Python 3.9 (Slicer 5.8's): the module file compiles and the check gives its message."""
    for path in [*LOADED_ON_OLD_SLICER, COMPAT_FILE]:
        out = subprocess.run(
            [PYTHON39, "-m", "py_compile", str(path)], capture_output=True, text=True, cwd=tmp_path
        )
        assert out.returncode == 0, out.stderr
    # slicer.app as Slicer 5.8 reports it (its majorVersion/minorVersion properties), nothing else of Slicer
    code = "\n".join(
        [
            "import sys, types",
            "sys.path.insert(0, sys.argv[1])",
            "app = types.SimpleNamespace(majorVersion=5, minorVersion=8)",
            "sys.modules['slicer'] = types.SimpleNamespace(app=app)",
            "from Rad4XCNNLib import compatibility as c",
            "print(c.slicer_version_problem(c.running_slicer_version()))",
        ]
    )
    out = subprocess.run(
        [PYTHON39, "-c", code, str(ROOT / "Rad4XCNN")], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("Rad4XCNN needs 3D Slicer 5.10 or later; this is Slicer 5.8 (Python 3.9.")
    assert sys.version_info >= (3, 10)
