"""The accumulators of the contract suite (``tests/features/test_accumulator_contracts.py``), one module per
family: the harness, decayed sums, global signals, a user's bounded lists, memories, the whole user state."""
