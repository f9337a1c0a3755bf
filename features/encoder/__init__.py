"""The sentence encoder: the ONNX run-time (``runtime``, onnxruntime + tokenizers), the one-time
export from sentence-transformers (``export``, needs torch) and its int8 variants (``quantize``).

Import from the modules; this package re-exports nothing, so importing one never loads another's heavy deps.
"""

__all__: list[str] = []
