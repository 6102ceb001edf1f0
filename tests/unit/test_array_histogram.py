"""ArrayHistogram (an allocation's n values in one numpy pass) exports exactly what
prometheus_client's Histogram does for the same observations."""

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from krl.allocator.metrics import N_BUCKETS, ArrayHistogram


def test_it_matches_prometheus_histogram_text() -> None:
    rng = np.random.default_rng(0)
    ours_reg, ref_reg = CollectorRegistry(), CollectorRegistry()
    ours = ArrayHistogram("x_n", "n.", "mode", N_BUCKETS, registry=ours_reg)
    ref = Histogram("x_n", "n.", ["mode"], buckets=N_BUCKETS, registry=ref_reg)
    for mode in ("eb", "paper"):
        for _ in range(3):
            values = np.concatenate([rng.integers(0, 700, 200), N_BUCKETS[:5]])  # edges too
            ours.observe_many(mode, values)
            for v in values:
                ref.labels(mode).observe(float(v))
    assert _samples(ours_reg) == _samples(ref_reg)
    assert b'x_n_bucket{le="+Inf",mode="eb"} 615.0' in generate_latest(ours_reg)


def _samples(reg: CollectorRegistry) -> list:
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for fam in reg.collect()
        for s in fam.samples
        if not s.name.endswith("_created")  # the reference's creation time
    )
