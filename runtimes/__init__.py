"""The minimal runtime that ships inside every artifact.

Import-light by rule: only numpy and onnxruntime (lazily) are imported here,
never the compiler, the CLI, scikit-learn or onnx. Every millisecond of import
is a millisecond of cold start.
"""
