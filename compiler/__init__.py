"""The compiler: model file + bento.yaml → a verified Bento.

Frontends turn a model into ONNX, passes optimize and check it, the parity
check proves it still agrees with the original; each step's output feeds the
next (the shape of onnxruntime's quantization tools).
"""
