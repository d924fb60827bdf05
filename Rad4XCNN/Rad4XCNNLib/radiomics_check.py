"""Is the PyRadiomics in this Python fit for the paper's features? Its version, and a check on a small image.

Inside 3D Slicer, PyRadiomics usually comes from the SlicerRadiomics extension, which builds it from an
upstream commit of its own choosing; it may also come from PyPI (``pyradiomics`` or ``pyradiomics-bhklab``).
Which one is there decides the values. :func:`check_radiomics` computes the paper preset on a small fixed
image through the engine and compares feature names and values with ``data/radiomics_reference.csv``,
written with the distribution the project pins (pyradiomics-bhklab 3.1.4). When they differ the module offers
to install ``pyradiomics-bhklab`` under the same constraints as every other install
(:func:`radiomics_install_plan`).

Which copy is checked matters as much as the check. Slicer puts the site-packages of extensions such as
SlicerRadiomics on PYTHONPATH, ahead of its own site-packages where pip installs (the extension paths of
Base/QTCore/qSlicerExtensionsManagerModel.cxx at v5.10.0), so after ``pyradiomics-bhklab`` is installed
``import radiomics`` would still find SlicerRadiomics' copy. :func:`prefer_installed_radiomics` puts the
installed distribution's folder first on the engine process's PYTHONPATH, and the check runs in that very
process (:func:`check_in_engine_process`, this module run as ``python -m Rad4XCNNLib.radiomics_check``), so
it judges the PyRadiomics the runs import.
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from Rad4XCNNLib import background, dependencies

#: Feature values of the reference image, from the pinned distribution (regenerate with
#: ``python -m Rad4XCNNLib.radiomics_check --write-reference`` after a deliberate upgrade).
REFERENCE = Path(__file__).resolve().parent / "data" / "radiomics_reference.csv"
PINNED = "pyradiomics-bhklab==3.1.4"
DISTRIBUTIONS = ("pyradiomics-bhklab", "pyradiomics")
RTOL, ATOL = 1e-6, 1e-9


def reference_case() -> tuple[np.ndarray, np.ndarray]:
    """The fixed test image (64 x 72, 8-bit, a textured blob on a ramp) and its lesion mask.

    Made from integer formulas only, so that it is the same on every machine and numpy version.
    """
    rows, cols = np.mgrid[0:64, 0:72]
    ramp = (rows * 2 + cols) % 97
    texture = ((rows * 7) ^ (cols * 13)) % 41
    inside = (rows - 30) ** 2 + (cols - 38) ** 2 <= 17**2
    image = (40 + ramp + np.where(inside, 3 * texture, texture // 2)).astype(np.uint8)
    mask = inside.astype(np.uint8)
    return image, mask


def installed_radiomics() -> dict[str, str | None]:
    """Which PyRadiomics is installed: ``distribution`` (pip's name, None if unknown, e.g. a path
    install), ``version`` (the distribution's), ``module_version`` (``radiomics.__version__``) and
    ``location`` (the folder the imported ``radiomics`` package came from)."""
    found: dict[str, str | None] = {"distribution": None, "version": None, "module_version": None}
    found["location"] = None
    for name in DISTRIBUTIONS:
        try:
            found["version"] = importlib.metadata.version(name)
            found["distribution"] = name
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import radiomics

        found["module_version"] = str(getattr(radiomics, "__version__", "")).lstrip("v") or None
        found["location"] = str(Path(radiomics.__file__).resolve().parent.parent)
    except ImportError:
        pass
    return found


def compute_reference_features(folder: str | Path | None = None):
    """The paper preset's features of :func:`reference_case`, computed by the engine (one process)."""
    import pandas as pd

    from Rad4XCNNLogic.cohort.imageio import write_image
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.features.radiomics import extract_radiomics

    with tempfile.TemporaryDirectory(prefix="rad4xcnn-radiomics-check-") as scratch:
        root = Path(folder or scratch)
        image, mask = reference_case()
        write_image(root / "image.nrrd", image)
        write_image(root / "mask.nrrd", mask)
        manifest = root / "manifest.csv"
        pd.DataFrame([{"case_id": "reference", "image": "image.nrrd", "mask": "mask.nrrd"}]).to_csv(
            manifest, index=False
        )
        result = extract_radiomics(read_manifest(manifest), "paper", jobs=1, progress=False)
    if result.failures:
        raise RuntimeError(f"the reference case failed: {result.failures[0]}")
    return result.features.iloc[0]


@dataclass
class RadiomicsCheck:
    """The outcome of :func:`check_radiomics`: accepted or not, and what differs."""

    installed: dict[str, str | None]
    accepted: bool
    n_features: int = 0
    problems: list[str] = field(default_factory=list)

    def message(self) -> str:
        """One paragraph for the user (and the log)."""
        dist = self.installed.get("distribution") or "PyRadiomics (distribution unknown)"
        version = self.installed.get("version") or self.installed.get("module_version") or "?"
        if self.accepted:
            return f"{dist} {version}: the paper preset's {self.n_features} features match the reference."
        return (
            f"{dist} {version} gives other radiomic features than the pinned {PINNED}: "
            + "; ".join(self.problems[:3])
            + (f" (and {len(self.problems) - 3} more)" if len(self.problems) > 3 else "")
            + f". Rad4XCNN can install {PINNED.split('==')[0]} (Slicer's own packages are kept)."
        )

    def as_record(self) -> dict:
        """What run.json-like records keep: the installed PyRadiomics and the verdict."""
        return {**self.installed, "accepted": self.accepted, "problems": list(self.problems)}


def compare_features(values, reference) -> list[str]:
    """Differences between two feature Series (name -> value): missing, extra, and differing values."""
    problems = []
    missing = [n for n in reference.index if n not in values.index]
    extra = [n for n in values.index if n not in reference.index]
    if missing:
        problems.append(f"{len(missing)} feature(s) missing, e.g. {missing[0]}")
    if extra:
        problems.append(f"{len(extra)} unexpected feature(s), e.g. {extra[0]}")
    common = [n for n in reference.index if n in values.index]
    got = values[common].to_numpy(dtype=float)
    want = reference[common].to_numpy(dtype=float)
    close = np.isclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True)
    for name, a, b in zip(np.asarray(common)[~close], got[~close], want[~close], strict=True):
        problems.append(f"{name} = {a:.6g}, reference {b:.6g}")
    return problems


def check_radiomics(reference: str | Path = REFERENCE) -> RadiomicsCheck:
    """Compute the paper preset on the reference image and compare with ``reference``.

    Returns a :class:`RadiomicsCheck`; not accepted when PyRadiomics is missing or any name or value
    differs (relative tolerance 1e-6).
    """
    import pandas as pd

    installed = installed_radiomics()
    if installed["module_version"] is None and installed["distribution"] is None:
        return RadiomicsCheck(installed, False, problems=["PyRadiomics is not installed"])
    expected = pd.read_csv(reference, index_col=0)["value"]
    values = compute_reference_features()
    problems = compare_features(values, expected)
    return RadiomicsCheck(installed, not problems, len(values), problems)


# ----------------------------------------------------------------- which copy the engine process imports
def installed_location(paths: Iterable[str] | None = None, name: str = DISTRIBUTIONS[0]) -> Path | None:
    """The folder (a site-packages) that holds the installed ``name`` distribution's ``radiomics`` package,
    looked up on ``paths`` (default ``sys.path``); None when it is not installed."""
    where = {} if paths is None else {"path": list(paths)}
    for dist in importlib.metadata.distributions(name=name, **where):
        folder = Path(dist.locate_file("")).resolve()
        if (folder / "radiomics" / "__init__.py").is_file():
            return folder
    return None


def first_on_path(pythonpath: str) -> Path | None:
    """The first PYTHONPATH entry that holds a ``radiomics`` package: what a process started with it imports
    (PYTHONPATH comes before the interpreter's own site-packages), None when no entry holds one."""
    for entry in filter(None, pythonpath.split(os.pathsep)):
        if (Path(entry) / "radiomics" / "__init__.py").is_file():
            return Path(entry).resolve()
    return None


def prefer_installed_radiomics(env: Mapping[str, str], paths: Iterable[str] | None = None) -> dict[str, str]:
    """``env`` with the installed ``pyradiomics-bhklab`` first on PYTHONPATH when another ``radiomics``
    (SlicerRadiomics') would shadow it there; unchanged otherwise (nothing installed, nothing shadowing)."""
    env = dict(env)
    installed = installed_location(paths)
    shadow = first_on_path(env.get("PYTHONPATH", ""))
    if installed is None or shadow is None or shadow == installed:
        return env
    entries = [e for e in env.get("PYTHONPATH", "").split(os.pathsep) if e]
    env["PYTHONPATH"] = os.pathsep.join([str(installed), *entries])
    return env


def imported_by_engine(env: Mapping[str, str] | None = None, **kwargs) -> dict[str, str | None]:
    """:func:`installed_radiomics` as the engine's process sees it (a child started with ``env``)."""
    return background.run_helper("Rad4XCNNLib.radiomics_check", "--which", env=env, **kwargs)


def check_in_engine_process(env: Mapping[str, str] | None = None, **kwargs) -> RadiomicsCheck:
    """:func:`check_radiomics`, run in a child started with ``env``: the PyRadiomics the runs import."""
    record = background.run_helper("Rad4XCNNLib.radiomics_check", "--check", env=env, **kwargs)
    return RadiomicsCheck(record["installed"], record["accepted"], record["n_features"], record["problems"])


def shadowed_message(wanted: Path | None, imported: str | None) -> str:
    """What to do when the engine process still imports another PyRadiomics than the installed one."""
    if wanted is None:
        return (
            f"pyradiomics-bhklab is not found after its install (the runs import PyRadiomics from "
            f"{imported or '(nowhere)'}): see the Python console's log of the install, restart Slicer and "
            "run again."
        )
    return (
        f"Rad4XCNN's runs import PyRadiomics from {imported or '(nowhere)'}, not the pyradiomics-bhklab "
        f"installed in {wanted}. Uninstall the SlicerRadiomics extension in the Extensions Manager (Rad4XCNN "
        "does not need it once pyradiomics-bhklab is installed), restart Slicer and run again."
    )


def radiomics_install_plan(system: str | None = None) -> dependencies.InstallPlan:
    """The plan that installs the pinned PyRadiomics distribution, as every other install: constraints on
    what is there, its needs listed and the package itself without its declared SimpleITK."""
    requirement = next(r for r in dependencies.REQUIREMENTS if r.source == "radiomics")
    pinned = dependencies.Requirement(requirement.module, PINNED, requirement.purpose, source="radiomics")
    return dependencies.install_plan(
        [pinned], pytorch_extension=True, radiomics_extension=False, system=system
    )


def write_reference(path: str | Path = REFERENCE) -> Path:
    """Write the reference values with the PyRadiomics installed here (only with the pinned distribution)."""
    installed = installed_radiomics()
    if f"{installed['distribution']}=={installed['version']}" != PINNED:
        raise RuntimeError(f"the reference must come from {PINNED}; this Python has {installed}")
    values = compute_reference_features()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values.rename("value").rename_axis("feature").to_csv(path, float_format="%.17g")
    return path


if __name__ == "__main__":
    import sys
    from dataclasses import asdict

    if sys.argv[1:] == ["--write-reference"]:
        print(write_reference())
    elif sys.argv[1:] == ["--which"]:
        background.print_answer(installed_radiomics())
    elif sys.argv[1:] == ["--check"]:
        background.print_answer(asdict(check_radiomics()))
    else:
        print(check_radiomics().message())
