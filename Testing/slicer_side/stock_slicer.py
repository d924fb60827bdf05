"""The module in a stock 3D Slicer's Python: only the packages Slicer ships, Qt and the application stubbed.

3D Slicer 5.10 ships numpy, scipy, pillow, SimpleITK, pydicom, requests, packaging, six, GitPython and VTK
(SuperBuild/External_python-*.cmake at v5.10.0); none of the engine's own packages. Run as a script, this
refuses every package of :data:`REFUSED` through an import hook, stands in for ``qt``, ``ctk``,
``slicer.ScriptedLoadableModule`` and ``slicer.app`` (a 5.10 application), keeps the real MRML classes of the
``slicer-core`` wheel, and then:

- ``import``: imports ``Rad4XCNN/Rad4XCNN.py`` and builds the module object;
- ``selftest FOLDER``: the same, then the module's parameters on a real scene and the default self-test
  scenarios (``Rad4XCNNLib.scenarios.run_default``) in ``FOLDER``.

It prints one JSON object: the import's seconds, the module's title, the shipped packages and refused
packages found loaded, and the scenarios' outcomes. ``Testing/slicer_side/test_stock_slicer.py`` and
``benchmarks/bench_module_import.py`` run it in a fresh interpreter.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: What a stock Slicer lacks and the module must not need to load: the issue's list (pandas, PyYAML, torch,
#: torchvision, timm, scikit-learn, xgboost, PyRadiomics, matplotlib, Jinja2) and what comes with them.
REFUSED = frozenset(
    {
        "pandas",
        "yaml",
        "torch",
        "torchvision",
        "timm",
        "sklearn",
        "xgboost",
        "radiomics",
        "matplotlib",
        "jinja2",
        "pytorch_grad_cam",
        "tqdm",
        "cv2",
        "pywt",
        "joblib",
        "pyarrow",
        "safetensors",
    }
)
SHIPPED_HEAVY = ("numpy", "scipy", "SimpleITK", "PIL", "vtk")


class Refuse(importlib.abc.MetaPathFinder):
    """Refuses the packages of :data:`REFUSED` as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REFUSED:
            raise ModuleNotFoundError(f"No module named '{name}' (not shipped with 3D Slicer)", name=name)
        return None


class _Anything:
    """A permissive stand-in for Qt and CTK objects: any attribute, any call."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()

    def __call__(self, *args, **kwargs):
        return _Anything()


class _AnyModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything


def _scripted_loadable_module() -> types.ModuleType:
    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

    class ScriptedLoadableModuleTest:
        pass

    for cls in (
        ScriptedLoadableModule,
        ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
    ):
        setattr(module, cls.__name__, cls)
    return module


def stock_slicer() -> None:
    """Turn this interpreter into a stock Slicer 5.10's Python (as far as the module can tell)."""
    # what Slicer's own ``import slicer`` loads before any module (Base/Python/slicer/__init__.py at v5.10.0:
    # vtk, and numpy and scipy early "as a workaround for application hang"), so not the module's cost
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    import slicer  # slicer-core: real MRML
    import vtk  # noqa: F401

    sys.meta_path.insert(0, Refuse())
    for name in ("qt", "ctk"):
        sys.modules[name] = _AnyModule(name)
    sys.modules["slicer.ScriptedLoadableModule"] = slicer.ScriptedLoadableModule = _scripted_loadable_module()
    # Slicer's translation helpers (Base/Python/slicer/i18n.py at v5.10.0) without a translation loaded
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr, i18n.translate = (lambda text: text), (lambda context, text: text)
    sys.modules["slicer.i18n"] = slicer.i18n = i18n
    slicer.app = types.SimpleNamespace(
        majorVersion=5, minorVersion=10, testingEnabled=lambda: False, connect=lambda signal, slot: None
    )
    # the engine next to the module, as in an installed extension (and not another checkout's)
    sys.path[:0] = [str(ROOT / "Rad4XCNN"), str(ROOT)]


def import_module() -> tuple[types.ModuleType, float]:
    start = time.perf_counter()
    import Rad4XCNN

    return Rad4XCNN, time.perf_counter() - start


def main(argv: list[str]) -> dict:
    stock_slicer()
    module, seconds = import_module()
    parent = types.SimpleNamespace()
    module.Rad4XCNN(parent)
    report = {
        "seconds": seconds,
        "unsupported": module.UNSUPPORTED,
        "title": getattr(parent, "title", ""),
    }
    if argv[:1] == ["selftest"]:
        import slicer
        from Rad4XCNNLib import bridge, scenarios

        del slicer.app  # the scenarios run on slicer-core's headless scene
        bridge.headless_slicer()
        report["outcomes"] = list(scenarios.run_default(Path(argv[1])))
    loaded = {name.split(".")[0] for name in sys.modules}
    report["refused_loaded"] = sorted(loaded & REFUSED)
    report["shipped_loaded"] = sorted(loaded & set(SHIPPED_HEAVY))
    library = [name.split(".")[1] for name in sys.modules if name.startswith("Rad4XCNNLib.")]
    report["rad4xcnnlib_loaded"] = sorted(library)
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
