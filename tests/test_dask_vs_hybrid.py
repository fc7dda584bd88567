"""The side-by-side bench with tiny sizes: both systems really scale from zero, run the burst and give workers back."""

from __future__ import annotations

import pytest

from bench.dask_vs_hybrid import compare

pytestmark = pytest.mark.e2e


def test_dask_and_hybrid_run_the_same_burst_from_zero_and_back() -> None:
    tasks, seconds, maximum, slots = 6, 0.5, 2, 2
    result = compare(tasks, seconds, maximum, slots)
    for system in ("dask", "hybrid_rm"):
        figures = result[system]
        assert figures["makespan_s"] >= seconds * tasks / (maximum * slots), system
        assert 1 <= figures["peak_workers"] <= maximum, system
        assert figures["slot_seconds"] >= tasks * seconds * 0.9, f"{system} ran the tasks on workers it counted"
        assert figures["back_to_zero_s"] is not None, f"{system} gave its workers back"
    assert result["hybrid_rm"]["ledger_node_seconds"] > 0
