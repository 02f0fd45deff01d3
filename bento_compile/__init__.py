"""bento-compile: a compiler for ML model serving.

This file ships inside every artifact (the runtime's modules live under this
namespace), so it must stay tiny: a version string and nothing that imports.
"""

__version__ = "0.1.0"
