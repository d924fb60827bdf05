"""Which Python packages Rad4XCNN needs, which are missing, and how to install them inside 3D Slicer.

Nothing here installs anything or imports a heavy package: it looks packages up with
``importlib.util.find_spec`` and makes an :class:`InstallPlan` that the Slicer module shows to the user
and, once they agree, carries out (torch through the PyTorch extension, which picks the CUDA build for
the computer; PyRadiomics from the SlicerRadiomics extension or PyPI; the rest with Slicer's pip helper).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

#: What the module itself needs in Slicer's process (reading results, exporting images), and what the
#: background pipeline needs on top.
GROUPS = ("module", "pipeline")


@dataclass(frozen=True)
class Requirement:
    """One Python package: its import name, its pip requirement (with the project's floor), what needs it."""

    module: str
    requirement: str
    purpose: str
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


# Floors are those of pyproject.toml (Testing/test_dependencies.py checks that they agree).
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
)

#: The module that the PyTorch extension adds to Slicer, and the one of SlicerRadiomics.
PYTORCH_EXTENSION_MODULE = "PyTorchUtils"
RADIOMICS_EXTENSION_MODULE = "SlicerRadiomics"


def _installed(module: str, find_spec: Callable = importlib.util.find_spec) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-installed package
        return False


def missing_requirements(
    group: str = "pipeline", find_spec: Callable = importlib.util.find_spec
) -> list[Requirement]:
    """The requirements of ``group`` ("module" or "pipeline") whose package cannot be found.

    Examples
    --------
    >>> [r.name for r in missing_requirements("module")]  # in a complete environment
    []
    """
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; expected one of {', '.join(GROUPS)}")
    return [r for r in REQUIREMENTS if group in r.groups and not _installed(r.module, find_spec)]


@dataclass(frozen=True)
class InstallStep:
    """One installation action: ``kind`` is "pytorch" (the PyTorch extension's installer) or "pip"."""

    kind: str
    requirements: tuple[str, ...]
    note: str = ""

    def version_of(self, name: str) -> str:
        """The version specifier this step asks for ``name`` (e.g. ``>=2.4`` for torch), or ''."""
        for text in self.requirements:
            requirement = Requirement(name, text, "")
            if requirement.name.lower() == name.lower():
                return requirement.specifier
        return ""


@dataclass
class InstallPlan:
    """What is missing and the steps that install it, in order (torch before what builds on it)."""

    missing: list[Requirement]
    steps: list[InstallStep] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.missing

    def message(self) -> str:
        """The text of the confirmation dialog: what is missing, why, and how it will be installed."""
        if self.empty:
            return "All required Python packages are installed."
        lines = ["Rad4XCNN needs these Python packages, which are not installed yet:", ""]
        lines += [f"  - {r.name} ({r.purpose})" for r in self.missing]
        lines += ["", "They will be installed now:"]
        for step in self.steps:
            how = (
                "through the PyTorch extension (it picks the CUDA build that suits this computer)"
                if step.kind == "pytorch"
                else "with pip"
            )
            lines.append(f"  - {' '.join(step.requirements)} {how}" + (f". {step.note}" if step.note else ""))
        lines += ["", "This may take several minutes and needs an internet connection. Continue?"]
        return "\n".join(lines)


def install_plan(
    missing: Iterable[Requirement], *, pytorch_extension: bool, radiomics_extension: bool
) -> InstallPlan:
    """Order the installation of ``missing`` packages.

    torch and torchvision go through the PyTorch extension's installer when the extension is present
    (otherwise from PyPI, with a note that a CPU-only build may come); PyRadiomics comes from PyPI when the
    SlicerRadiomics extension does not provide it; everything else is one pip step after torch.

    Examples
    --------
    >>> plan = install_plan(missing_requirements(), pytorch_extension=True, radiomics_extension=True)
    >>> plan.empty  # in a complete environment
    True
    """
    missing = list(missing)
    steps: list[InstallStep] = []
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
    pip = tuple(r.requirement for r in missing if r.source == "pip")
    radiomics = tuple(r.requirement for r in missing if r.source == "radiomics")
    note = ""
    if radiomics:
        note = (
            "PyRadiomics is installed from PyPI"
            if not radiomics_extension
            else "the SlicerRadiomics extension is installed but its PyRadiomics could not be found; "
            "installing PyRadiomics from PyPI"
        )
    if pip or radiomics:
        steps.append(InstallStep("pip", radiomics + pip, note))
    return InstallPlan(missing, steps)


def check(group: str = "pipeline", find_spec: Callable = importlib.util.find_spec) -> InstallPlan:
    """The install plan for ``group`` in this Python, detecting the PyTorch and SlicerRadiomics extensions."""
    return install_plan(
        missing_requirements(group, find_spec),
        pytorch_extension=_installed(PYTORCH_EXTENSION_MODULE, find_spec),
        radiomics_extension=_installed(RADIOMICS_EXTENSION_MODULE, find_spec),
    )
