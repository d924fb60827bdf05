"""The engine's layout: subpackages in layers, no cycle, no import from a lower layer to a higher one, no
heavy import when the package or its CLI is imported, and modules of a readable size."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "Rad4XCNNLogic"
#: Lower layers first; a module may import its own layer and the ones below it (docs/ARCHITECTURE.md).
LAYERS = [
    {"errors", "names", "infra"},
    {"cohort"},
    {"features"},
    {"explain", "classify", "cam"},
    {"run"},
    {"cli", "__init__", "__main__"},
]


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(part: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every engine module ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("Rad4XCNNLogic"):
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if (ENGINE.parent / Path(*candidate.split("."))).with_suffix(".py").is_file():
                    found.add(candidate)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the engine uses absolute imports")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("Rad4XCNNLogic")}
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in ENGINE.rglob("*.py")}


def test_every_module_belongs_to_a_layer():
    for module in _graph():
        _layer(_part(module))


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = []
    for module, imports in _graph().items():
        for target in imports:
            if target == "Rad4XCNNLogic":
                continue  # the package's version and public errors
            if _layer(_part(target)) > _layer(_part(module)):
                bad.append(f"{module} -> {target}")
    assert not bad, bad


def test_no_import_cycle_between_subpackages():
    edges: dict[str, set[str]] = {}
    for module, imports in _graph().items():
        for target in imports:
            a, b = _part(module), _part(target)
            if a != b and target != "Rad4XCNNLogic":
                edges.setdefault(a, set()).add(b)
    seen, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError(f"import cycle: {' -> '.join([*stack[stack.index(node) :], node])}")
        if node in seen:
            return
        stack.append(node)
        for nxt in edges.get(node, ()):
            visit(nxt)
        stack.pop()
        seen.add(node)

    for node in list(edges):
        visit(node)


def test_engine_never_imports_the_slicer_side():
    for module, imports in _graph().items():
        assert not any(t.startswith("Rad4XCNNLib") for t in imports), module
    text = "\n".join(p.read_text(encoding="utf-8") for p in ENGINE.rglob("*.py"))
    for name in ("slicer", "qt", "ctk"):
        assert f"\nimport {name}\n" not in text and f"\nfrom {name} import" not in text


#: The longest module and the longest function of the engine, in lines (docs/ARCHITECTURE.md).
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 150


def test_modules_and_functions_are_of_a_readable_size():
    """No module over 800 lines and no function over 150, without exceptions: a longer one is split by job."""
    too_long = []
    for path in ENGINE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long


def _runtime_imports(path: Path) -> set[str]:
    """The engine modules ``path`` imports when it runs (inside functions too; not typing-only imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("Rad4XCNNLogic."):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (ENGINE.parent / Path(*candidate.split("."))).with_suffix(".py").is_file()
                found.add(candidate if is_module else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("Rad4XCNNLogic.")}
    return found


def test_no_import_cycle_between_modules():
    """Not even inside a subpackage, and not hidden by an import inside a function: a module that needs
    another's name imports it at the top, and the two never need each other."""
    edges = {_module_name(p): _runtime_imports(p) for p in ENGINE.rglob("*.py")}
    done: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> None:
        if node in stack:
            raise AssertionError(f"import cycle: {' -> '.join([*stack[stack.index(node) :], node])}")
        if node in done:
            return
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            visit(nxt)
        stack.pop()
        done.add(node)

    for node in sorted(edges):
        visit(node)


def test_importing_the_engine_and_its_help_loads_no_heavy_library():
    code = (
        "import sys, contextlib, io\n"
        "import Rad4XCNNLogic\n"
        "from Rad4XCNNLogic.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "    for command in ('run', 'explain', 'classify', 'cam', 'deep'):\n"
        "        try:\n            main([command, '--help'])\n        except SystemExit:\n            pass\n"
        "heavy = ('torch', 'timm', 'radiomics', 'sklearn', 'xgboost', 'matplotlib', 'slicer',\n"
        "         'pytorch_grad_cam')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_private_helper_is_used_across_modules():
    """A name starting with ``_`` belongs to its module: no import of it, no ``module._name`` elsewhere."""
    sources = [*ENGINE.rglob("*.py"), *(ROOT / "Rad4XCNN" / "Rad4XCNNLib").rglob("*.py")]
    bad = []
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                ("Rad4XCNNLogic", "Rad4XCNNLib")
            ):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        bad.append(f"{path.name}: from {node.module} import {alias.name}")
                    aliases.add(alias.asname or alias.name)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                bad.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert not bad, bad


# ------------------------------------------------------------------------------------ the Slicer side
SLICER_SIDE = ROOT / "Rad4XCNN"


def _slicer_side_files() -> list[Path]:
    return sorted(p for p in SLICER_SIDE.rglob("*.py") if "__pycache__" not in p.parts)


def test_slicer_side_modules_are_of_a_readable_size():
    """The module file and every Rad4XCNNLib module stay under 700 lines, without exceptions."""
    files = _slicer_side_files()
    assert SLICER_SIDE / "Rad4XCNN.py" in files and SLICER_SIDE / "Rad4XCNNLib" / "bridge.py" in files
    long = {p.relative_to(ROOT).as_posix(): n for p in files if (n := len(p.read_text().splitlines())) > 700}
    assert not long, f"split these by job: {long}"


def test_slicer_side_has_no_import_cycle():
    """Rad4XCNNLib's modules import one another without a circle (imports inside functions included), and
    none imports the module file."""
    library = SLICER_SIDE / "Rad4XCNNLib"
    edges: dict[str, set[str]] = {}
    for path in library.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "Rad4XCNNLib":
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("Rad4XCNNLib."):
                targets.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                assert not any(a.name == "Rad4XCNN" for a in node.names), path.name
        edges[path.stem] = targets - {path.stem}
    done: set[str] = set()

    def visit(module, stack):
        if module in stack:
            raise AssertionError(f"import cycle: {' -> '.join([*stack[stack.index(module) :], module])}")
        if module in done:
            return
        for target in edges.get(module, ()):
            visit(target, [*stack, module])
        done.add(module)

    for module in edges:
        visit(module, [])
