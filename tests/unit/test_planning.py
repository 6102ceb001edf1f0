from hypothesis import given, settings
from hypothesis import strategies as st

from krl.rollout.planning import split


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(0, 64)), min_size=1, max_size=40),
    st.integers(1, 8),
    st.integers(1, 64),
)
def test_split_keeps_every_n_and_balances_expected_tokens(prompts, replicas, max_new) -> None:
    batch = [(tuple(range(length)), n) for length, n in prompts]
    parts = split(batch, replicas, max_new)
    assert len(parts) == replicas
    got: dict[int, int] = {}
    loads = []
    for items in parts:
        load = 0
        for it in items:
            assert it.n > 0
            got[it.key[0]] = got.get(it.key[0], 0) + it.n
            load += it.n * (len(it.prompt_ids) + max_new)
        loads.append(load)
    assert got == {i: n for i, (_, n) in enumerate(batch) if n > 0}
    costs = [len(ids) + max_new for ids, n in batch if n > 0]
    if costs:
        share = sum(loads) / replicas
        assert max(loads) <= share + max(costs)


def test_a_large_group_is_spread_over_replicas() -> None:
    parts = split([((1, 2, 3), 64), ((1,), 1)], 4, 10)
    assert all(parts) and sum(it.n for p in parts for it in p if it.key[0] == 0) == 64
