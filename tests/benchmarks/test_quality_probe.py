"""The quality probe's read-outs are p13n's own where they claim to be (benchmarks/quality_probe.py)."""

from __future__ import annotations

import numpy as np

from benchmarks.quality_probe import BASE, _replay, paired
from p13n.importers import import_movielens
from tests.conftest import REPO


def test_the_probes_copy_of_the_covisit_readout_is_p13ns_and_blends_compare_paired(tmp_path):
    import_movielens(REPO / "tests" / "data" / "movielens-tiny", tmp_path, now_ms=2_000_000_000_000)
    cases = _replay((str(tmp_path / "events.jsonl"), str(tmp_path / "items.jsonl"), None, False))
    assert len(cases) == 21  # the tiny subset's protocol users (tests/features/test_movielens.py)
    nonzero = 0
    for case in cases:
        # the probe re-reads the replay's own Space-Saving rows: its p13n read-out equals the scorer's feature
        np.testing.assert_allclose(case.features["cv_p13n"], case.features["covisit"], rtol=1e-9, atol=1e-12)
        nonzero += bool(case.features["covisit"].any())
        assert set(np.unique(case.features["cold"])) <= {0.0, 1.0}
    assert nonzero >= 15
    same = paired(cases, cases, BASE)  # the same blend on both sides: no difference, no spread
    assert "(+0.000±0.000)" in same and same.count("->") == 2, same
