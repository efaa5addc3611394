"""Interoperation with other libraries: diffusers model folders read as runs (``diffusers_in``); runs exported
as diffusers pipeline folders (``diffusers_out``) and as ONNX denoisers run by ONNX Runtime (``onnx``).

``diffusers_out`` imports diffusers when it is imported; ``onnx`` imports onnx / onnxruntime only when it
exports or loads.
"""
