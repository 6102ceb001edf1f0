"""record_update.apply, vectorized, against the per-prompt rule written out plainly (the rule of
the Lua script it replaced): random records with and without history, full and partly used visit
slots, reports older than a prompt's last visit, with and without decay."""

import math
import struct

import numpy as np
import pytest

from krl.allocator.store import record_update
from krl.allocator.store.record import HEAD_BYTES, RATE_KEEP, RECENT_KEPT, RECORD_BYTES, recent_of


def _one(raw, succ, trials, tokens, step, half_life, logit):
    """One prompt's new record and its contributions, as report.lua computed them."""

    def weight(age):
        return 1.0 if half_life <= 0 or age <= 0 else 2.0 ** (-age / half_life)

    d = dict.fromkeys(("sum_p", "sum_p2", "sum_inv_t", "tok_w", "tok_sum"), 0.0)
    c = {"prompts": 0, "solved": 0, "unsolved": 0, **{f"h{b}": 0 for b in range(10)}}
    lv = {}
    if raw is not None:
        v = list(struct.unpack("<11d", raw[:HEAD_BYTES]))
        recent = [x for x in recent_of(raw)]
        t_old = v[0] + v[1]
        if t_old > 0:
            p = v[0] / t_old
            d["sum_p"] -= p
            d["sum_p2"] -= p * p
            d["sum_inv_t"] -= 1 / t_old
            c[f"h{min(int(p * 10), 9)}"] -= 1
        if v[7] > 0:
            lv[f"{int(v[6])}:{int(v[7])}"] = lv.get(f"{int(v[6])}:{int(v[7])}", 0) - 1
        c["solved"] -= v[10] == 1
        c["unsolved"] -= v[10] == -1
    else:
        c["prompts"] += 1
        v = [0, 0, step, 0, 0, 0, 0, 0, 0, 0, 0]
        recent = []
    last = v[2]
    w_old, w_new = (weight(step - last), 1.0) if step >= last else (1.0, weight(last - step))
    v[0] = v[0] * w_old + succ * w_new
    v[1] = v[1] * w_old + (trials - succ) * w_new
    v[2] = max(step, last)
    v[3], v[4], v[5] = v[3] + 1, v[4] + trials, v[5] + succ
    v[6], v[7] = succ, trials
    lv[f"{succ}:{trials}"] = lv.get(f"{succ}:{trials}", 0) + 1
    v[8] = v[8] * w_old + trials * w_new
    v[9] = v[9] * w_old + tokens * w_new
    p = v[0] / (v[0] + v[1])
    d["sum_p"] += p
    d["sum_p2"] += p * p
    d["sum_inv_t"] += 1 / (v[0] + v[1])
    c[f"h{min(int(p * 10), 9)}"] += 1
    d["tok_w"] += trials
    d["tok_sum"] += tokens
    v[10] = 1 if succ == trials else (-1 if succ == 0 else 0)
    c["solved"] += v[10] == 1
    c["unsolved"] += v[10] == -1
    # the visits of the raw record were step, n, k only; the logit is checked separately
    recent = [*recent, (step, trials, succ)][-RECENT_KEPT:]
    return v, recent, d, c, lv


def _random_record(rng):
    if rng.random() < 0.3:
        return None
    visits = int(rng.integers(1, RECENT_KEPT + 3))
    kept = min(visits, RECENT_KEPT)
    tail = b"".join(
        struct.pack(
            "<4i", int(s), int(n), int(rng.integers(0, n + 1)), int(rng.integers(-900, 900))
        )
        for s, n in zip(sorted(rng.integers(0, 40, kept)), rng.integers(1, 16, kept), strict=True)
    )
    s, f = rng.uniform(0, 20, 2)
    lt = int(rng.integers(1, 16))
    ls = int(rng.integers(0, lt + 1))
    head = struct.pack(
        "<11d",
        s,
        f,
        float(rng.integers(0, 40)),
        visits,
        99,
        40,
        ls,
        lt,
        30.0,
        3000.0,
        1.0 if ls == lt else (-1.0 if ls == 0 else 0.0),
    )
    raw = head + tail
    return raw + b"\xff" * (RECORD_BYTES - len(raw))  # whole, as reports and imports write it


@pytest.mark.parametrize("half_life", [0.0, 7.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_apply_matches_the_per_prompt_rule(seed, half_life):
    rng = np.random.default_rng(seed)
    m = 200
    old = [_random_record(rng) for _ in range(m)]
    trials = rng.integers(1, 17, m)
    succ = rng.binomial(trials, 0.4)
    tokens = trials * rng.integers(1, 200, m)
    step = 20  # older than some prompts' last step: those keep their step, the report decays
    rate = (37.5, 101.25)
    up = record_update.apply(old, succ, trials, tokens, step, half_life, rate)

    factor = RATE_KEEP**m
    add_s = sum(
        (RATE_KEEP ** (m - 1 - i)) * (k / n)
        for i, (k, n) in enumerate(zip(succ, trials, strict=True))
    )
    add_w = sum(RATE_KEEP ** (m - 1 - i) for i in range(m))
    assert up.rate == pytest.approx((factor, add_s, add_w), rel=1e-12)
    r = (rate[0] * factor + add_s) / (rate[1] * factor + add_w)
    logit = math.floor(1000 * math.log(r / (1 - r)) + 0.5)

    floats = dict.fromkeys(record_update.FLOAT_AGGREGATES, 0.0)
    counts, lv = {}, {}
    for i in range(m):
        v, recent, d, c, l1 = _one(
            old[i], int(succ[i]), int(trials[i]), int(tokens[i]), step, half_life, logit
        )
        new = up.new_raws[i]
        assert len(new) == RECORD_BYTES
        np.testing.assert_allclose(struct.unpack("<11d", new[:HEAD_BYTES]), v, rtol=1e-12)
        assert recent_of(new) == recent
        assert struct.unpack("<i", new[HEAD_BYTES + 16 * (len(recent) - 1) + 12 :][:4])[0] == logit
        for k, x in d.items():
            floats[k] += x
        for group, into in ((c, counts), (l1, lv)):
            for k, x in group.items():
                into[k] = into.get(k, 0) + int(x)
    assert up.floats == pytest.approx({k: x for k, x in floats.items() if x != 0}, rel=1e-9)
    assert up.counts == {k: x for k, x in counts.items() if x != 0}
    assert up.last_visits == {k: x for k, x in lv.items() if x != 0}
