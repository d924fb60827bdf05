"""Which Python packages Rad4XCNN needs, which are missing, and how to install them without harming Slicer.

Nothing here imports a heavy package: packages are looked up with ``importlib.util.find_spec`` and an
:class:`InstallPlan` is made that the module shows to the user and, once they agree, carries out with
:func:`run_plan`: torch through the PyTorch extension, the rest with Slicer's pip helper under a
constraints file that pins every distribution already installed (:func:`constraints_text`), so that an
install never replaces a package of Slicer's (numpy, scipy, SimpleITK, vtk, ...). SimpleITK is never
installed; packages whose declared dependencies would pull torch or the GUI build of OpenCV (timm,
grad-cam, pyradiomics-bhklab) are installed with ``--no-deps`` and their real needs listed here. MONAI goes
in with its declared dependencies (torch, numpy): the constraints hold both, so pip picks a MONAI release
that supports the torch already there instead of replacing it.

Optional packages (MONAI, for the native 3D networks) belong to no group: they are installed only when the
settings of a run need them (:func:`extra_requirements`, passed to :func:`check` as ``extra``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import logging
import platform
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: What the module itself needs in Slicer's process (reading results, exporting images), and what the
#: background pipeline needs on top.
GROUPS = ("module", "pipeline")


@dataclass(frozen=True)
class Requirement:
    """One Python package: its import name, its pip requirement (with the project's floor), what needs it."""

    module: str
    requirement: str
    purpose: str
    #: the groups that need it; none for an optional package, which settings ask for (extra_requirements)
    groups: tuple[str, ...] = ("pipeline",)
    #: "pytorch": through the PyTorch extension; "radiomics": from SlicerRadiomics or PyPI; "pip": PyPI.
    source: str = "pip"

    @property
    def name(self) -> str:
        """The distribution name, e.g. ``scikit-learn`` for ``scikit-learn>=1.4``."""
        return re.split(r"[<>=!~\[; ]", self.requirement, maxsplit=1)[0]

    @property
    def specifier(self) -> str:
        """The version part of the requirement, e.g. ``>=1.4``."""
        return self.requirement[len(self.name) :].strip()

    @property
    def optional(self) -> bool:
        """True for a package no group needs: it is installed only when a setting asks for it."""
        return not self.groups


# Floors are those of pyproject.toml (Testing/slicer_side/test_dependencies.py checks that they agree).
REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("numpy", "numpy>=1.24", "arrays", ("module", "pipeline")),
    Requirement("scipy", "scipy>=1.10", "statistics", ("module", "pipeline")),
    Requirement("pandas", "pandas>=2.0", "result tables", ("module", "pipeline")),
    Requirement("SimpleITK", "SimpleITK>=2.3", "image files", ("module", "pipeline")),
    Requirement("PIL", "pillow>=10.0", "PNG and JPEG images", ("module", "pipeline")),
    Requirement("yaml", "pyyaml>=6.0", "run configurations", ("module", "pipeline")),
    Requirement("tqdm", "tqdm>=4.66", "progress", ("module", "pipeline")),
    Requirement("torch", "torch>=2.4", "deep features (CNNs)", source="pytorch"),
    Requirement("torchvision", "torchvision>=0.19", "image transforms", source="pytorch"),
    Requirement("timm", "timm>=1.0", "backbone networks"),
    Requirement("safetensors", "safetensors>=0.4", "network weights"),
    Requirement("radiomics", "pyradiomics-bhklab>=3.1.4", "radiomic features", source="radiomics"),
    Requirement("pywt", "PyWavelets>=1.4", "wavelet radiomic features"),
    Requirement("sklearn", "scikit-learn>=1.4", "classifiers"),
    Requirement("xgboost", "xgboost>=2.0", "XGBoost classifier"),
    Requirement("pytorch_grad_cam", "grad-cam>=1.5.4", "saliency maps (CAMs)"),
    Requirement("matplotlib", "matplotlib>=3.8", "report plots"),
    Requirement("jinja2", "jinja2>=3.1", "the HTML report"),
    Requirement("monai", "monai>=1.3", "native 3D networks for volumes", groups=()),
)

#: The module that the PyTorch extension adds to Slicer, and the one of SlicerRadiomics.
PYTORCH_EXTENSION_MODULE = "PyTorchUtils"
RADIOMICS_EXTENSION_MODULE = "SlicerRadiomics"


def _installed(module: str, find_spec: Callable = importlib.util.find_spec) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-installed package
        return False


def extra_requirements(backbone: str | None) -> tuple[Requirement, ...]:
    """The optional requirements that a run with the network ``backbone`` needs besides its group's: MONAI
    for a native 3D network (``monai_resnet18``, ...; the engine's list), nothing for a timm name.

    Examples
    --------
    >>> [r.requirement for r in extra_requirements("monai_resnet18")], extra_requirements("resnet50")
    (['monai>=1.3'], ())
    """
    from Rad4XCNNLogic.features.volume_nets import is_volume_net

    return tuple(r for r in REQUIREMENTS if r.module == "monai") if is_volume_net(backbone) else ()


def missing_requirements(
    group: str = "pipeline",
    find_spec: Callable = importlib.util.find_spec,
    extra: Iterable[Requirement] = (),
) -> list[Requirement]:
    """The requirements of ``group`` ("module" or "pipeline"), and the ``extra`` ones (optional packages
    that the settings need: :func:`extra_requirements`), whose package cannot be found.

    Examples
    --------
    >>> [r.name for r in missing_requirements("module")]  # in a complete environment
    []
    """
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; expected one of {', '.join(GROUPS)}")
    extra = list(extra)
    wanted = [r for r in REQUIREMENTS if group in r.groups or r in extra]
    return [r for r in wanted if not _installed(r.module, find_spec)]


#: Slicer's own packages: never installed by the module (Slicer's SimpleITK carries Slicer's IO classes).
NEVER_INSTALL = ("SimpleITK",)
#: Packages installed with ``--no-deps``, and what they really need besides torch and torchvision (which the
#: PyTorch extension brings). grad-cam declares opencv-python-headless (cv2, imported by its base class
#: through ``pytorch_grad_cam.utils.image``), ttach, tqdm, matplotlib, scikit-learn (``kpca_cam`` is imported
#: by the package) and scipy; timm declares huggingface_hub, pyyaml and safetensors; pyradiomics-bhklab
#: declares SimpleITK, which must stay Slicer's, so it too goes in without its declared dependencies. (MONAI
#: is not here: each release raises its torch floor, so it is installed with its dependencies under the
#: constraints, and pip chooses the newest release that fits the installed torch.)
NO_DEPS_NEEDS: dict[str, tuple[str, ...]] = {
    "grad-cam": (
        "opencv-python-headless>=4.8",
        "ttach>=0.0.3",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "scikit-learn>=1.4",
        "scipy>=1.10",
        "pillow>=10.0",
    ),
    "timm": ("huggingface_hub>=0.20", "pyyaml>=6.0", "safetensors>=0.4"),
    "pyradiomics-bhklab": ("PyWavelets>=1.4", "pykwalify>=1.8", "six>=1.16"),
}
#: In Slicer on Linux and Windows, XGBoost comes as its CPU-only distribution: the full one pulls NVIDIA's
#: NCCL library (hundreds of MB) that a CPU classifier of a few hundred cases never uses.
CPU_DISTRIBUTIONS = {"xgboost": "xgboost-cpu>=2.1"}


@dataclass(frozen=True)
class InstallStep:
    """One installation action.

    ``kind`` is "pytorch" (the PyTorch extension's installer) or "pip" (Slicer's pip helper, always with the
    constraints file); ``no_deps`` installs ``requirements`` without their declared dependencies.
    """

    kind: str
    requirements: tuple[str, ...]
    note: str = ""
    no_deps: bool = False
    #: pip's ``--upgrade``: these packages may move to a newer version (they are left out of the constraints)
    upgrade: bool = False

    def version_of(self, name: str) -> str:
        """The version specifier this step asks for ``name`` (e.g. ``>=2.4`` for torch), or ''."""
        for text in self.requirements:
            requirement = Requirement(name, text, "")
            if requirement.name.lower() == name.lower():
                return requirement.specifier
        return ""


@dataclass
class InstallPlan:
    """What is missing and the steps that install it, in order (torch before what builds on it).

    ``refused`` are missing packages the module will not install (Slicer's own, e.g. SimpleITK), with why.
    """

    missing: list[Requirement]
    steps: list[InstallStep] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.missing

    def pip_requirements(self) -> list[str]:
        """Every requirement the pip steps name (for a dry run of the plan with pip's resolver)."""
        return [r for step in self.steps if step.kind == "pip" for r in step.requirements]

    def message(self) -> str:
        """The text of the confirmation dialog: what is missing, why, and how it will be installed."""
        if self.empty:
            return "All required Python packages are installed."
        lines = ["Rad4XCNN needs these Python packages, which are not installed yet:", ""]
        lines += [f"  - {r.name} ({r.purpose})" for r in self.missing]
        if self.refused:
            lines += ["", "Not installed by Rad4XCNN:"] + [f"  - {text}" for text in self.refused]
        if self.steps:
            lines += ["", "They will be installed now:"]
        for step in self.steps:
            if step.kind == "pytorch":
                how = "through the PyTorch extension (it picks the CUDA build that suits this computer)"
            elif step.no_deps:
                how = "with pip, without their declared dependencies (listed in the step before)"
            else:
                how = "with pip"
            lines.append(f"  - {' '.join(step.requirements)} {how}" + (f". {step.note}" if step.note else ""))
        lines += [
            "",
            "Packages that Slicer already has (numpy, scipy, SimpleITK, vtk, ...) are kept as they are.",
            "This may take several minutes and needs an internet connection. Continue?",
        ]
        return "\n".join(lines)


def _name(requirement: str) -> str:
    return Requirement("", requirement, "").name


def install_plan(
    missing: Iterable[Requirement],
    *,
    pytorch_extension: bool,
    radiomics_extension: bool,
    system: str | None = None,
) -> InstallPlan:
    """Order the installation of ``missing`` packages.

    torch and torchvision go through the PyTorch extension's installer when the extension is present
    (otherwise from PyPI, with a note that a CPU-only build may come). Everything else is one pip step; the
    packages of :data:`NO_DEPS_NEEDS` follow in a ``--no-deps`` step after their needs. PyRadiomics comes
    from the SlicerRadiomics extension; when it is missing, ``pyradiomics-bhklab`` is offered the same way.
    SimpleITK (Slicer's own) is never installed. ``system`` is ``platform.system()`` by default.

    Examples
    --------
    >>> plan = install_plan(missing_requirements(), pytorch_extension=True, radiomics_extension=True)
    >>> plan.empty  # in a complete environment
    True
    """
    missing = list(missing)
    system = system or platform.system()
    steps: list[InstallStep] = []
    refused = [
        f"{r.name}: it is part of 3D Slicer; reinstall Slicer rather than add another one"
        for r in missing
        if r.name in NEVER_INSTALL
    ]
    torch = tuple(r.requirement for r in missing if r.source == "pytorch")
    if torch:
        if pytorch_extension:
            steps.append(InstallStep("pytorch", torch))
        else:
            steps.append(
                InstallStep(
                    "pip",
                    torch,
                    "The PyTorch extension was not found: installing PyTorch from PyPI instead (install the "
                    "extension from the Extensions Manager to get the build that matches your GPU)",
                )
            )
    wanted = [r for r in missing if r.source in ("pip", "radiomics") and r.name not in NEVER_INSTALL]
    no_deps = tuple(r.requirement for r in wanted if r.name in NO_DEPS_NEEDS)
    regular: list[str] = []
    for r in wanted:
        if r.name in NO_DEPS_NEEDS:
            continue
        text = r.requirement
        if r.name in CPU_DISTRIBUTIONS and system in ("Linux", "Windows"):
            text = CPU_DISTRIBUTIONS[r.name]
        regular.append(text)
    for package in no_deps:
        regular += NO_DEPS_NEEDS[_name(package)]
    regular = list({_name(text).lower(): text for text in regular}.values())
    note = ""
    if any(r.source == "radiomics" for r in wanted):
        note = (
            "PyRadiomics (pyradiomics-bhklab) is installed from PyPI; the SlicerRadiomics extension is the "
            "usual way to get it"
            if not radiomics_extension
            else "the SlicerRadiomics extension is installed but its PyRadiomics could not be found; "
            "installing pyradiomics-bhklab from PyPI"
        )
    if regular:
        steps.append(InstallStep("pip", tuple(regular)))
    if no_deps:
        steps.append(InstallStep("pip", no_deps, note, no_deps=True))
    elif note and steps:
        steps[-1] = InstallStep("pip", steps[-1].requirements, note)
    return InstallPlan(missing, steps, refused)


def check(
    group: str = "pipeline",
    find_spec: Callable = importlib.util.find_spec,
    extra: Iterable[Requirement] = (),
) -> InstallPlan:
    """The install plan for ``group`` and the ``extra`` requirements of the settings
    (:func:`extra_requirements`) in this Python, detecting the PyTorch and SlicerRadiomics extensions."""
    return install_plan(
        missing_requirements(group, find_spec, extra),
        pytorch_extension=_installed(PYTORCH_EXTENSION_MODULE, find_spec),
        radiomics_extension=_installed(RADIOMICS_EXTENSION_MODULE, find_spec),
    )


# ------------------------------------------------------------------------------------------- constraints
def installed_distributions(paths: Iterable[str] | None = None) -> dict[str, str]:
    """``{name: version}`` of every distribution installed on ``paths`` (default: ``sys.path``)."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=list(paths) if paths is not None else sys.path):
        name = dist.metadata["Name"] if dist.metadata else None
        if name and dist.version and name.lower() not in {n.lower() for n in found}:
            found[name] = dist.version
    return found


def constraints_text(installed: Mapping[str, str]) -> str:
    """A pip constraints file pinning every installed distribution to its version (``name==version``).

    Under it pip may add packages but never upgrade, downgrade or replace one that is there. Versions that
    pip cannot read as a pin (e.g. a source build's ``1.2.3+local`` is fine, ``unknown`` is not) are
    left out with a log message.

    Examples
    --------
    >>> print(constraints_text({"numpy": "1.26.4", "SimpleITK": "2.4.0"}))
    # Rad4XCNN: what this Python already holds; pip may add packages but not change these.
    numpy==1.26.4
    SimpleITK==2.4.0
    <BLANKLINE>
    """
    lines = ["# Rad4XCNN: what this Python already holds; pip may add packages but not change these."]
    for name in sorted(installed, key=str.lower):
        version = str(installed[name]).strip()
        if not re.fullmatch(r"[0-9][0-9A-Za-z.+!_-]*", version):
            log.info("not pinned: %s has the version %r, which pip cannot pin", name, version)
            continue
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def write_constraints(folder: str | Path, installed: Mapping[str, str] | None = None) -> Path:
    """Write :func:`constraints_text` of ``installed`` (default: this Python's) to ``folder``; its path."""
    path = Path(folder) / "rad4xcnn-constraints.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(constraints_text(installed_distributions() if installed is None else installed))
    return path


def pip_arguments(step: InstallStep, constraints: str | Path) -> list[str]:
    """The ``pip install`` arguments of a pip step (after ``install``), constraints first.

    Examples
    --------
    >>> pip_arguments(InstallStep("pip", ("grad-cam>=1.5.4",), no_deps=True), "c.txt")
    ['-c', 'c.txt', '--no-deps', 'grad-cam>=1.5.4']
    """
    if step.kind != "pip":
        raise ValueError(f"a {step.kind} step is not run with pip")
    options = [*(["--no-deps"] if step.no_deps else []), *(["--upgrade"] if step.upgrade else [])]
    return ["-c", str(constraints), *options, *step.requirements]


# --------------------------------------------------------------------------------------------- installs
_install_lock = threading.Lock()


class InstallInProgress(RuntimeError):
    """An install was asked for while another one runs (e.g. a second click on Run)."""


@contextlib.contextmanager
def one_install_at_a_time():
    """Hold the module's install lock for the ``with`` block; raise :class:`InstallInProgress` if taken.

    Examples
    --------
    >>> with one_install_at_a_time():
    ...     pass
    """
    if not _install_lock.acquire(blocking=False):
        raise InstallInProgress("Python packages are being installed already; wait until that finishes")
    try:
        yield
    finally:
        _install_lock.release()


def install_in_progress() -> bool:
    """True while :func:`one_install_at_a_time` is held (the widget greys out Run and Explain then)."""
    return _install_lock.locked()


def run_plan(
    plan: InstallPlan,
    folder: str | Path,
    slicer_module=None,
    install_torch=None,
    installed: Callable[[], Mapping[str, str]] = installed_distributions,
) -> None:
    """Carry out ``plan`` inside 3D Slicer: torch with ``install_torch``, the pip steps under constraints.

    The constraints file is written afresh before each pip step (so torch, once installed, is pinned too).
    Where the Slicer version has ``slicer.packaging`` (Base/Python/slicer/packaging.py at v5.12.0, v5.12.3
    and main; absent at v5.10.0) its ``pip_install(requirements, constraints=..., no_deps_requirements=...,
    requester=...)`` is used; Slicer 5.10 has only ``slicer.util.pip_install(requirements)``
    (Base/Python/slicer/util.py at v5.10.0), which takes a list of pip arguments, so ``-c`` and
    ``--no-deps`` are passed in it.
    ``install_torch(torch_requirement, torchvision_requirement)`` is the PyTorch extension's installer;
    ``installed()`` lists what the target Python holds (default: this Python's distributions).
    """
    if slicer_module is None:
        import slicer as slicer_module

        with contextlib.suppress(ImportError):  # Slicer 5.12 and later; the import sets slicer.packaging
            importlib.import_module("slicer.packaging")
    packaging = getattr(slicer_module, "packaging", None)
    with one_install_at_a_time():
        pip_steps = [s for s in plan.steps if s.kind == "pip"]
        for step in plan.steps:
            if step.kind == "pytorch":
                if install_torch is None:
                    raise RuntimeError("the plan installs torch but no PyTorch installer was given")
                install_torch(step.version_of("torch"), step.version_of("torchvision"))
        if not pip_steps:
            return
        upgrading = {_name(r).lower() for s in pip_steps if s.upgrade for r in s.requirements}

        def held() -> dict[str, str]:  # what pip must not change: all that is installed, but the upgrades
            return {name: version for name, version in installed().items() if name.lower() not in upgrading}

        constraints = write_constraints(folder, held())
        if packaging is not None and hasattr(packaging, "pip_install") and not upgrading:
            regular = [r for s in pip_steps if not s.no_deps for r in s.requirements]
            no_deps = [r for s in pip_steps if s.no_deps for r in s.requirements]
            # every --no-deps package brings its needs into ``regular`` (NO_DEPS_NEEDS), so it is never empty
            packaging.pip_install(
                regular,
                constraints=str(constraints),
                no_deps_requirements=no_deps or None,
                requester="Rad4XCNN",
            )
            return
        for step in pip_steps:
            slicer_module.util.pip_install(pip_arguments(step, constraints))
            constraints = write_constraints(folder, held())


def install_torch_with_extension(torch_requirement: str, torchvision_requirement: str):
    """Install torch and torchvision through the PyTorch extension; the torch module.

    ``PyTorchUtilsLogic().installTorch(askConfirmation, forceComputationBackend, torchVersionRequirement,
    torchvisionVersionRequirement)`` is the extension's API (PyTorchUtils/PyTorchUtils.py of
    fepegar/SlicerPyTorch); it picks the build that suits the computer's GPU driver.
    """
    import PyTorchUtils

    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=False,
        torchVersionRequirement=torch_requirement,
        torchvisionVersionRequirement=torchvision_requirement,
    )
    if torch is None:
        raise RuntimeError("PyTorch could not be installed")
    return torch


# ---------------------------------------------------------------------------------------- the package panel
@dataclass(frozen=True)
class PackageRow:
    """One line of the module's package panel: a package Rad4XCNN uses, the version it needs, the one here."""

    name: str
    purpose: str
    required: str
    installed: str | None
    source: str
    optional: bool = False

    @property
    def status(self) -> str:
        """``ok``, ``missing``, ``too old`` (below the project's floor), or ``optional, not installed``."""
        if self.installed is None:
            return "optional, not installed" if self.optional else "missing"
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
        from packaging.version import InvalidVersion

        try:
            return (
                "ok" if SpecifierSet(self.required).contains(self.installed, prereleases=True) else "too old"
            )
        except (InvalidSpecifier, InvalidVersion):
            return "ok"

    def text(self) -> str:
        return f"{self.name} {self.installed or '-'} (needs {self.required}; {self.purpose}): {self.status}"


def package_rows(installed: Mapping[str, str] | None = None) -> list[PackageRow]:
    """Every package of :data:`REQUIREMENTS` with its installed version (``installed``: name -> version,
    default this Python's distributions; pyradiomics-bhklab or pyradiomics for PyRadiomics)."""
    installed = installed_distributions() if installed is None else installed
    versions = {name.lower(): version for name, version in installed.items()}
    rows = []
    for r in REQUIREMENTS:
        names = [r.name, *(["pyradiomics"] if r.source == "radiomics" else [])]
        names += [_name(CPU_DISTRIBUTIONS[r.name])] if r.name in CPU_DISTRIBUTIONS else []
        version = next((versions[n.lower()] for n in names if n.lower() in versions), None)
        rows.append(PackageRow(r.name, r.purpose, r.specifier, version, r.source, r.optional))
    return rows


#: Packages the upgrade leaves alone: Slicer's own (its build's versions); torch comes from the PyTorch
#: extension (source "pytorch") and is reinstalled from the Device panel.
NOT_UPGRADED = ("numpy", "scipy", "SimpleITK", "pillow")


def upgrade_plan(rows: list[PackageRow]) -> InstallPlan:
    """The package panel's *Upgrade*: what is missing installed as on a first run (an optional package
    only once a run needs it), and the packages only Rad4XCNN uses upgraded (pip ``--upgrade`` within the
    project's floors, all else held by the constraints). Slicer's packages and torch (reinstalled from the
    Device panel) are not touched."""
    absent = {row.name for row in rows if row.installed is None}
    missing = [r for r in REQUIREMENTS if r.name in absent and not r.optional]
    plan = install_plan(missing, pytorch_extension=True, radiomics_extension=False)
    upgradable = {
        row.name
        for row in rows
        if row.installed is not None and row.source == "pip" and row.name not in NOT_UPGRADED
    }
    requirements = tuple(r.requirement for r in REQUIREMENTS if r.name in upgradable)
    if requirements:
        plan.steps.append(
            InstallStep("pip", requirements, "upgrade within the project's limits", upgrade=True)
        )
    return plan
