"""Static checks of the 3D Slicer extension (Slicer cannot run here): CMake lists, .ui, module code, metadata.

Every file named in the CMake lists exists; the .ui file parses; every widget the module's code uses, and
every widget bound to a setting, exists in the .ui with a fitting class; the extension metadata, icon and
catalog entry are complete and agree; and only the MRML modules of the engine import Slicer.
"""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image
from Rad4XCNNLib import parameters as mrml_parameters

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "Rad4XCNN"
MODULE_FILE = MODULE / "Rad4XCNN.py"
UI_FILE = MODULE / "Resources" / "UI" / "Rad4XCNN.ui"
CATALOG = ROOT / "packaging" / "ExtensionsIndex" / "Rad4XCNN.json"
HOMEPAGE = "https://github.com/rad4xcnn/Rad4XCNN"
RAW = "https://raw.githubusercontent.com/rad4xcnn/Rad4XCNN/main/"


# ---------------------------------------------------------------------------------------------- CMake
def _cmake_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(command, arguments) of a CMake file, comments removed, quoted arguments kept whole."""
    text = re.sub(r"#[^\n]*", "", path.read_text())
    commands = []
    for match in re.finditer(r"(\w+)\s*\((.*?)\)\s*(?=\n|$)", text, flags=re.S):
        args = re.findall(r'"[^"]*"|[^\s()]+', match.group(2))
        commands.append((match.group(1).lower(), [a.strip('"') for a in args]))
    return commands


def _variables(commands) -> dict[str, list[str]]:
    variables: dict[str, list[str]] = {}
    for name, args in commands:
        if name == "set" and args:
            variables[args[0]] = args[1:]
    return variables


def _expand(value: str, variables: dict[str, list[str]]) -> list[str]:
    for _ in range(5):
        match = re.search(r"\$\{(\w+)\}", value)
        if not match:
            break
        values = variables.get(match.group(1))
        if values is None:
            return [value]
        if value == match.group(0) and len(values) != 1:
            return [v for item in values for v in _expand(item, variables)]
        value = value.replace(match.group(0), " ".join(values))
    return [value]


def _cmake_files():
    return sorted(p for p in ROOT.rglob("CMakeLists.txt") if ".venv" not in p.parts)


def test_cmake_lists_name_existing_files():
    checked = 0
    for cmake in _cmake_files():
        commands = _cmake_commands(cmake)
        variables = _variables(commands)
        variables.setdefault("MODULE_NAME", ["Rad4XCNN"])
        for name, args in commands:
            if name == "add_subdirectory":
                assert (cmake.parent / args[0] / "CMakeLists.txt").is_file(), f"{cmake}: {args[0]}"
                checked += 1
            if name == "slicer_add_python_unittest":
                script = args[args.index("SCRIPT") + 1]
                for item in _expand(script, variables):
                    assert (cmake.parent / item).is_file(), f"{cmake}: test script {item}"
                    checked += 1
        for var in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
            for value in variables.get(var, []):
                for item in _expand(value, variables):
                    assert (cmake.parent / item).is_file(), f"{cmake}: {var} names a missing file {item}"
                    checked += 1
    assert checked >= 6


def test_cmake_minimum_is_that_of_the_slicer_5_10_template():
    """Utilities/Templates/Extensions/Default/CMakeLists.txt at v5.10.0 asks for 3.20.6...3.22.6."""
    name, args = _cmake_commands(ROOT / "CMakeLists.txt")[0]
    assert name == "cmake_minimum_required" and args == ["VERSION", "3.20.6...3.22.6", "FATAL_ERROR"]


def test_engine_package_is_collected_into_the_extension():
    commands = _cmake_commands(MODULE / "CMakeLists.txt")
    globs = [args for name, args in commands if name == "file" and args[0] == "GLOB_RECURSE"]
    patterns = [a for args in globs for a in args if "Rad4XCNNLogic" in a]
    assert any(p.endswith("Rad4XCNNLogic/*.py") for p in patterns)
    # the glob is recursive: the subpackages and their data files travel with the engine
    found = sorted((ROOT / "Rad4XCNNLogic").rglob("*.py"))
    assert ROOT / "Rad4XCNNLogic" / "__init__.py" in found
    assert ROOT / "Rad4XCNNLogic" / "explain" / "explanation.py" in found
    assert any(p.endswith("Rad4XCNNLogic/*/data/*") for p in patterns)
    assert (ROOT / "Rad4XCNNLogic" / "features" / "data" / "radiomics_paper.yaml").is_file()
    # the Slicer side is not part of the engine package: it is listed with the module's own scripts
    assert not (ROOT / "Rad4XCNNLogic" / "mrml_bridge.py").exists()
    compile_calls = [args for name, args in commands if name == "ctkmacrocompilepythonscript"]
    (args,) = compile_calls
    assert args[args.index("TARGET_NAME") + 1] == "Rad4XCNNLogic"
    assert "NO_INSTALL_SUBDIR" in args
    # installed into the same folder as the module, which Slicer puts on sys.path
    assert args[args.index("INSTALL_DIR") + 1] == "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}"
    assert args[args.index("SOURCE_DIR") + 1] == "${ENGINE_SOURCE_DIR}"


def test_extension_metadata_is_complete():
    variables = _variables(_cmake_commands(ROOT / "CMakeLists.txt"))
    for key in (
        "HOMEPAGE",
        "CATEGORY",
        "CONTRIBUTORS",
        "DESCRIPTION",
        "ICONURL",
        "SCREENSHOTURLS",
        "DEPENDS",
    ):
        value = " ".join(variables.get(f"EXTENSION_{key}", [])).strip()
        assert value and value != "NA", f"EXTENSION_{key} is empty"
    assert variables["EXTENSION_HOMEPAGE"] == [HOMEPAGE]
    assert " ".join(variables["EXTENSION_DEPENDS"]).split() == ["PyTorch", "SlicerRadiomics"]
    for url in [*variables["EXTENSION_ICONURL"], *" ".join(variables["EXTENSION_SCREENSHOTURLS"]).split()]:
        assert url.startswith(RAW), url
        assert (ROOT / url.removeprefix(RAW)).is_file(), (
            f"{url} points to a file that is not in the repository"
        )
    assert len(" ".join(variables["EXTENSION_DESCRIPTION"])) > 80


def test_icons_are_128_pixel_pngs():
    top, module_icon = ROOT / "Rad4XCNN.png", MODULE / "Resources" / "Icons" / "Rad4XCNN.png"
    for path in (top, module_icon):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (128, 128)
    assert top.read_bytes() == module_icon.read_bytes()


def test_catalog_entry_matches_the_cmake_metadata():
    entry = json.loads(CATALOG.read_text())
    allowed = {
        "$schema",
        "category",
        "scm_url",
        "scm_revision",
        "scm_type",
        "build_dependencies",
        "build_subdirectory",
        "enabled",
        "tier",
    }
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert entry["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/")
    variables = _variables(_cmake_commands(ROOT / "CMakeLists.txt"))
    assert entry["category"] == variables["EXTENSION_CATEGORY"][0]
    assert entry["build_dependencies"] == " ".join(variables["EXTENSION_DEPENDS"]).split()
    assert entry["scm_url"].removesuffix(".git") == HOMEPAGE
    assert 1 <= entry["tier"] <= 5


def test_license_is_apache_2():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()


# ------------------------------------------------------------------------------------------------- .ui
def _ui_widgets() -> dict[str, str]:
    tree = ET.parse(UI_FILE)
    names = [(w.get("name"), w.get("class")) for w in tree.iter("widget")]
    counts: dict[str, int] = {}
    for name, _ in names:
        counts[name] = counts.get(name, 0) + 1
    duplicates = [n for n, c in counts.items() if c > 1]
    assert not duplicates, f"widget names used twice in the .ui: {duplicates}"
    return dict(names)


def test_ui_parses_and_declares_its_custom_widgets():
    tree = ET.parse(UI_FILE)
    root = tree.getroot()
    assert root.tag == "ui" and root.findtext("class") == "Rad4XCNN"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "Rad4XCNN"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {c for c in _ui_widgets().values() if not c.startswith("Q")}
    assert used <= declared, f"custom widgets used but not declared: {used - declared}"
    # MRML node selectors receive the scene from the top widget
    receivers = {
        c.findtext("receiver") for c in root.iter("connection") if "mrmlSceneChanged" in c.findtext("signal")
    }
    selectors = {n for n, c in _ui_widgets().items() if c == "qMRMLNodeComboBox"}
    assert selectors and selectors <= receivers


def _ui_names_used(path: Path, prefixes=("self.ui.", "ui.")) -> set[str]:
    """Every ``<prefix><name>`` attribute access in a Python file (found in its syntax tree)."""
    tree = ast.parse(path.read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = node.value
            if (
                isinstance(base, ast.Attribute)
                and base.attr == "ui"
                and isinstance(base.value, ast.Name)
                and base.value.id == "self"
            ) or (isinstance(base, ast.Name) and base.id == "ui"):
                used.add(node.attr)
    return used


@pytest.mark.parametrize("path", [MODULE_FILE, MODULE / "Testing" / "Python" / "Rad4XCNNWidgetTest.py"])
def test_every_widget_the_code_uses_is_in_the_ui(path):
    widgets = _ui_widgets()
    used = _ui_names_used(path)
    assert used, f"{path.name} uses no widget?"
    missing = sorted(used - set(widgets))
    assert not missing, f"{path.name} uses widgets that are not in Rad4XCNN.ui: {missing}"


def test_every_setting_is_bound_to_a_widget_of_a_fitting_class():
    widgets = _ui_widgets()
    for parameter in mrml_parameters.PARAMETERS:
        if parameter.widget is None:
            continue
        assert parameter.widget in widgets, f"{parameter.name}: widget {parameter.widget} is not in the .ui"
        allowed = mrml_parameters.WIDGET_CLASSES[parameter.kind]
        assert widgets[parameter.widget] in allowed, (
            f"{parameter.name} ({parameter.kind}) is bound to a {widgets[parameter.widget]}; "
            f"expected one of {allowed}"
        )


def test_ui_node_selectors_offer_the_node_classes_of_their_setting():
    tree = ET.parse(UI_FILE)
    for parameter in mrml_parameters.PARAMETERS:
        if parameter.kind != "node" or parameter.widget is None:
            continue
        widget = next(w for w in tree.iter("widget") if w.get("name") == parameter.widget)
        prop = next(p for p in widget.iter("property") if p.get("name") == "nodeTypes")
        assert [s.text for s in prop.iter("string")] == list(parameter.node_classes)


# --------------------------------------------------------------------------------------- module code
def test_module_file_defines_the_four_classes_and_imports_the_engine_under_other_names():
    tree = ast.parse(MODULE_FILE.read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    bases = {name: [ast.unparse(b) for b in node.bases] for name, node in classes.items()}
    assert bases["Rad4XCNN"] == ["ScriptedLoadableModule"]
    assert bases["Rad4XCNNWidget"][0] == "ScriptedLoadableModuleWidget"
    assert bases["Rad4XCNNLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["Rad4XCNNTest"] == ["ScriptedLoadableModuleTest"]
    bound_names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "Rad4XCNNLogic":
                    assert alias.asname and alias.asname != "Rad4XCNNLogic"
                bound_names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            bound_names.update(alias.asname or alias.name for alias in node.names)
            if node.module and node.module.startswith("Rad4XCNNLogic"):
                for alias in node.names:
                    module = f"{node.module}.{alias.name}".replace(".", "/")
                    exists = (ROOT / f"{module}.py").is_file() or (
                        ROOT / f"{node.module.replace('.', '/')}.py"
                    ).is_file()
                    assert exists, f"Rad4XCNN.py imports {node.module}.{alias.name}, which does not exist"
    assert "Rad4XCNNLogic" not in bound_names, "the engine package would shadow the module's logic class"


def test_module_file_stays_thin():
    """The widget binds and shows; the decisions live in Rad4XCNNLib (and the size rule of every Slicer-side
    module, 700 lines, is Testing/test_layout.py's): no module-level function but the sample data's hook."""
    tree = ast.parse(MODULE_FILE.read_text())
    functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert functions == ["registerSampleData"]
    assert len(MODULE_FILE.read_text().splitlines()) <= 700


def test_only_mrml_modules_of_the_engine_import_slicer():
    pattern = re.compile(r"^(import|from) (slicer|qt|ctk|vtk)\b", re.M)
    offenders = [
        p.name
        for p in (ROOT / "Rad4XCNNLogic").glob("*.py")
        if "mrml" not in p.name and pattern.search(p.read_text())
    ]
    assert offenders == []


def test_widget_states_name_widgets_of_the_ui():
    from Rad4XCNNLib import guistate

    states = guistate.enabled_states({}, running=False, installing=False)
    missing = sorted(set(states) - set(_ui_widgets()))
    assert not missing, f"guistate names widgets that are not in Rad4XCNN.ui: {missing}"


def test_every_slicer_side_file_is_in_the_cmake_lists():
    """A Rad4XCNNLib module (or data file) left out of MODULE_PYTHON_SCRIPTS/RESOURCES is missing from the
    built extension, although every test here passes."""
    variables = _variables(_cmake_commands(MODULE / "CMakeLists.txt"))
    variables.setdefault("MODULE_NAME", ["Rad4XCNN"])
    listed = {
        item
        for var in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES")
        for value in variables[var]
        for item in _expand(value, variables)
    }
    library = MODULE / "Rad4XCNNLib"
    on_disk = {p.relative_to(MODULE).as_posix() for p in library.rglob("*") if p.is_file()}
    on_disk = {p for p in on_disk if "__pycache__" not in p}
    assert on_disk - listed == set()
