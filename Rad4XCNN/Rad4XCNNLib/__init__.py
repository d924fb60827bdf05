"""The 3D Slicer side of Rad4XCNN (Slicer's <Module>Lib convention): the MRML bridge, the parameter node, the
result views, the self-test scenarios, the background engine process and the dependency installs.

It needs MRML (3D Slicer, or the slicer-core wheel in CI) but never Qt, so that it is tested without the GUI.
It is not part of the pip engine."""


def reload_library() -> list[str]:
    """Reload every imported ``Rad4XCNNLib`` module, each after the modules it imported, for the module's
    Reload button; returns their names in that order (the order their first imports finished in: importlib
    moves a module to the end of ``sys.modules`` once it has run).

    Examples
    --------
    >>> import Rad4XCNNLib.guistate
    >>> "Rad4XCNNLib.guistate" in reload_library()
    True
    """
    import importlib
    import sys

    names = [name for name in list(sys.modules) if name.startswith(__name__ + ".")]
    for name in names:
        importlib.reload(sys.modules[name])
    return names
