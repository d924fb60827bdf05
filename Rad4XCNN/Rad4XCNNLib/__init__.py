"""The 3D Slicer side of Rad4XCNN (Slicer's <Module>Lib convention): the MRML bridge, the parameter node, the
result views, the self-test scenarios, the background engine process and the dependency installs.

It needs MRML (3D Slicer, or the slicer-core wheel in CI) but never Qt, so that it is tested without the GUI.
It is not part of the pip engine."""
