"""Synthetic data generators: a drifting event stream (``synthetic``) and multi-session conversations
with questions (``conversations``), for tests, the demo, calibration and offline evaluation.

Import from the modules; this package re-exports nothing.
"""

__all__: list[str] = []
