"""Offline evaluation: the replay of an event log (``replay``, ``p13n eval``), its inputs and
ranking metrics, the baselines and prototype signals it compares, blend-weight tuning (``p13n tune``) and the
memory-retrieval recall (``memory_recall``, ``p13n eval memory``).

Import from the modules; this package re-exports nothing.
"""

__all__: list[str] = []
