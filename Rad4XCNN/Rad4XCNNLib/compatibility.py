"""Which 3D Slicer, Python and platform the module supports, and the one message shown when they do not fit.

The module file imports this before anything else of the engine, so it must import on an old Slicer too:
it is written in the Python of Slicer 5.8 (3.9: annotations stay strings, no ``match``, no
``zip(strict=...)``) and imports nothing outside the standard library.
Testing/slicer_side/test_compatibility.py parses it (and the module file) as Python 3.9.
"""

from __future__ import annotations

import platform
import sys

#: The first Slicer release the module supports. Slicer 5.10 ships Python 3.12; the engine needs 3.10
#: (``zip(strict=...)``, ``X | None`` read by ``typing.get_type_hints`` in the run configuration).
MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 10)
#: torch's floor in the install plan (dependencies.REQUIREMENTS) and the last torch release with builds for
#: Intel Macs (PyTorch stopped publishing macOS x86_64 wheels after 2.2.2).
TORCH_FLOOR = (2, 4)
LAST_TORCH_FOR_INTEL_MAC = "2.2.2"


def slicer_version_problem(
    slicer_version: tuple[int, int] | None, python_version: tuple[int, ...] = tuple(sys.version_info[:3])
) -> str | None:
    """The message to show when this Slicer (``(major, minor)``) or its Python is too old, else None.

    ``slicer_version`` None means "not inside Slicer" (plain Python, slicer-core): only Python is checked.

    Examples
    --------
    >>> slicer_version_problem((5, 10), (3, 12, 4)) is None
    True
    >>> slicer_version_problem((5, 8), (3, 9, 10)).split(";")[0]
    'Rad4XCNN needs 3D Slicer 5.10 or later'
    """
    need = f"{MINIMUM_SLICER[0]}.{MINIMUM_SLICER[1]}"
    python = ".".join(str(v) for v in python_version[:3])
    if slicer_version is not None and tuple(slicer_version[:2]) < MINIMUM_SLICER:
        return (
            f"Rad4XCNN needs 3D Slicer {need} or later; this is Slicer "
            f"{slicer_version[0]}.{slicer_version[1]} (Python {python}). Install the current Slicer release "
            "from download.slicer.org; the module stays loaded but cannot run here."
        )
    if tuple(python_version[:2]) < MINIMUM_PYTHON:
        return (
            f"Rad4XCNN needs Python {MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} or later (3D Slicer {need} or "
            f"later); this Python is {python}."
        )
    return None


def running_slicer_version() -> tuple[int, int] | None:
    """``(major, minor)`` of the running 3D Slicer, or None outside the Slicer application.

    ``slicer.app.majorVersion`` and ``minorVersion`` are Qt properties of qSlicerCoreApplication
    (Base/QTCore/qSlicerCoreApplication.h, checked at v5.8.1, v5.10.0 and main).
    """
    slicer = sys.modules.get("slicer")
    app = getattr(slicer, "app", None)
    if app is None:
        return None
    return int(app.majorVersion), int(app.minorVersion)


def translation_functions():
    """Slicer's ``(tr, translate)`` (Base/Python/slicer/i18n.py at v5.10.0), or untranslated stand-ins.

    Slicer added ``slicer.i18n`` in 5.6 (SlicerIGT/SlicerIGT#224); without the stand-ins an older Slicer
    would fail on the module file's first lines instead of showing :func:`slicer_version_problem`'s message.
    """
    try:
        from slicer.i18n import tr, translate
    except ImportError:
        return (lambda text: text), (lambda context, text: text)
    return tr, translate


def platform_problem(
    system: str | None = None, machine: str | None = None, torch_version: str | None = None
) -> str | None:
    """Why deep features cannot run on this platform, or None: Intel Macs have no torch >= 2.4.

    ``torch_version`` is the installed torch (None: not installed). An Intel Mac that already holds a torch
    at the floor (a source build) is accepted; otherwise the message says what to do instead.

    Examples
    --------
    >>> platform_problem("Darwin", "x86_64") is not None
    True
    >>> platform_problem("Darwin", "arm64") is None
    True
    """
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    if system != "Darwin" or machine not in ("x86_64", "amd64", "i386"):
        return None
    if torch_version and _version_tuple(torch_version) >= TORCH_FLOOR:
        return None
    return (
        f"Rad4XCNN's deep features need PyTorch {TORCH_FLOOR[0]}.{TORCH_FLOOR[1]} or later, and PyTorch "
        f"publishes no build of it for Intel Macs (the last one is {LAST_TORCH_FOR_INTEL_MAC}). "
        "Run the analysis on another computer (Linux, Windows or an Apple silicon Mac) and load its run "
        "folder here with 'Load results', or install a PyTorch you built yourself."
    )


def xgboost_problem(error: BaseException, system: str | None = None) -> str | None:
    """A clear message for an XGBoost that is installed but cannot load, or None when ``error`` is another.

    On macOS the xgboost wheel links to the OpenMP runtime (libomp), which macOS lacks; the import then fails
    with an OSError / XGBoostError naming ``libomp.dylib``.

    Examples
    --------
    >>> xgboost_problem(OSError("Library not loaded: @rpath/libomp.dylib"), "Darwin").startswith("XGBoost")
    True
    """
    text = str(error)
    if "libomp" not in text and "OpenMP" not in text:
        return None
    system = system or platform.system()
    fix = (
        "install the OpenMP runtime (Homebrew: 'brew install libomp') and restart Slicer"
        if system == "Darwin"
        else "install the OpenMP runtime of your system (libgomp / libomp) and restart Slicer"
    )
    return (
        f"XGBoost is installed but cannot load its OpenMP runtime: {fix}. The other classifiers "
        "(random forest, SVM) work without it."
    )


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():
            break
    return tuple(parts)
