"""GRPO maths over groups of different sizes: advantages, micro-batching, the clipped loss."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from krl.model.loading import load_model
from krl.model.tiny import TinyShape, build_tiny_model
from krl.trainer import grpo


def test_advantages_use_each_groups_own_statistics():
    rewards = [[1, 0, 0], [1, 1], [0, 1, 1, 1, 0, 0, 0, 1], [0]]
    ga = grpo.group_advantages(rewards, scale="std", clip=None)
    assert [len(a) for a in ga.advantages] == [3, 2, 8, 1]
    # group of 3: mean 1/3, population std sqrt(2)/3
    std = np.sqrt(2) / 3
    np.testing.assert_allclose(
        ga.advantages[0], [(2 / 3) / std, (-1 / 3) / std, (-1 / 3) / std], rtol=1e-5
    )
    # group of 8 with half successes: +-1 exactly
    np.testing.assert_allclose(ga.advantages[2], [-1, 1, 1, 1, -1, -1, -1, 1], rtol=1e-5)
    assert ga.zero_variance == [False, True, False, True]
    assert ga.effective_groups == 2
    assert not ga.advantages[1].any() and not ga.advantages[3].any()
    for a, z in zip(ga.advantages, ga.zero_variance, strict=True):
        assert abs(a.sum()) < 1e-9  # centred within the group
        if not z:
            assert abs(a.std() - 1) < 1e-4  # unit scale within the group


def test_no_std_variant_and_clipping():
    ga = grpo.group_advantages([[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]], scale="none", clip=None)
    np.testing.assert_allclose(ga.advantages[0], [0.9] + [-0.1] * 9)
    # with std scaling the lone success gets 3.0; a clip of 2 caps it
    ga = grpo.group_advantages([[1] + [0] * 9], scale="std", clip=2.0)
    assert ga.advantages[0][0] == pytest.approx(2.0)
    assert ga.advantages[0][1] == pytest.approx(-1 / 3, rel=1e-4)


@pytest.mark.parametrize("bad", [[[float("nan"), 1.0]], [[]], [[float("inf")]]])
def test_bad_rewards_are_refused(bad):
    with pytest.raises(ValueError):
        grpo.group_advantages(bad)


def test_unknown_scale_is_refused():
    with pytest.raises(ValueError, match="scale"):
        grpo.group_advantages([[1, 0]], scale="rank")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1), min_size=1, max_size=40), min_size=1, max_size=30))
def test_advantage_properties_hold_for_any_group_sizes(groups):
    ga = grpo.group_advantages(groups, scale="std", clip=None)
    for r, a, z in zip(groups, ga.advantages, ga.zero_variance, strict=True):
        assert len(a) == len(r)
        assert z == (len(set(r)) == 1)
        # a success never gets a lower advantage than a failure of the same group
        if not z:
            assert min(a[i] for i, x in enumerate(r) if x) > max(
                a[i] for i, x in enumerate(r) if not x
            )


def _sample(p: int, c: int, adv: float) -> grpo.Sample:
    return grpo.Sample(list(range(5, 5 + p)), list(range(10, 10 + c)), [-1.0] * c, adv)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=40),
    st.integers(8, 200),
)
def test_micro_batches_keep_every_sample_within_the_token_limit(shapes, limit):
    samples = [_sample(p, c, 1.0) for p, c in shapes]
    batches = grpo.micro_batches(samples, limit)
    assert sorted(id(s) for b in batches for s in b) == sorted(id(s) for s in samples)
    for b in batches:
        assert len(b) == 1 or len(b) * max(s.length for s in b) <= limit


def test_sample_checks_logprob_count():
    with pytest.raises(ValueError, match="behaviour logprobs"):
        grpo.Sample([1], [2, 3], [-1.0], 1.0)


def test_clipping_stops_the_gradient_outside_the_trust_region():
    cfg = grpo.LossConfig(eps_low=0.2, eps_high=0.2)
    old = torch.zeros(1, 3)
    new = torch.tensor([[0.5, 0.0, -0.5]], requires_grad=True)  # ratios e^.5, 1, e^-.5
    mask = torch.ones(1, 3)
    loss, stats = grpo.clipped_loss_sum(new, old, torch.tensor([[1.0]]), mask, cfg)
    loss.backward()
    g = new.grad[0]
    assert g[0] == 0  # A > 0 and ratio above 1 + eps: clipped
    assert g[1] == pytest.approx(-1.0)  # unclipped: d(-ratio)/d new = -1 at ratio 1
    assert g[2] == pytest.approx(-np.exp(-0.5), rel=1e-5)  # A > 0, ratio below 1 - eps: kept
    assert stats["clipped_tokens"] == 1
    new.grad = None
    loss, _ = grpo.clipped_loss_sum(new, old, torch.tensor([[-1.0]]), mask, cfg)
    loss.backward()
    assert new.grad[0][2] == 0  # A < 0 and ratio below 1 - eps: clipped
    assert new.grad[0][0] == pytest.approx(np.exp(0.5), rel=1e-5)


def test_kl_term_is_zero_at_the_reference_and_needs_it():
    cfg = grpo.LossConfig(kl_beta=0.1)
    x = torch.tensor([[-1.0, -2.0]])
    loss, stats = grpo.clipped_loss_sum(x, x, torch.tensor([[0.0]]), torch.ones(1, 2), cfg, ref=x)
    assert stats["ref_kl_sum"] == pytest.approx(0.0)
    loss2, stats2 = grpo.clipped_loss_sum(
        x, x, torch.tensor([[0.0]]), torch.ones(1, 2), cfg, ref=x + 0.5
    )
    assert stats2["ref_kl_sum"] > 0 and float(loss2) > float(loss)
    with pytest.raises(ValueError, match="reference"):
        grpo.clipped_loss_sum(x, x, torch.tensor([[0.0]]), torch.ones(1, 2), cfg)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = build_tiny_model(
        tmp_path_factory.mktemp("m"),
        TinyShape(hidden_size=32, num_hidden_layers=1, intermediate_size=64),
        seed=1,
    )
    return load_model(folder)


def _on_policy(model, specs, temperature=1.0):
    """Samples whose behaviour logprobs are the model's own (ratio exactly 1)."""
    out = []
    for p, c, a in specs:
        ids = torch.tensor([p + c])
        with torch.no_grad():
            lp = grpo.token_logprobs(model, ids, torch.ones_like(ids), temperature)[0]
        out.append(grpo.Sample(p, c, lp[len(p) - 1 :].tolist(), a))
    return out


SPECS = [
    ([5, 6, 7], [10, 11, 2], 1.2),
    ([8, 9], [12, 2], -0.7),
    ([5, 9, 9, 9], [2], 0.4),
    ([6], [13, 14, 15, 16, 2], -1.1),
    ([7, 7], [10, 2], 0.0),
]


def test_micro_batched_update_equals_full_batch_update(tiny):
    samples = _on_policy(tiny, SPECS)
    results = []
    for max_tokens in (10_000, 8, 1):
        m = copy.deepcopy(tiny)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        res = grpo.train_step(
            m, opt, samples, grpo.LossConfig(), max_tokens=max_tokens, max_grad_norm=1e9
        )
        results.append((res, torch.cat([p.detach().flatten() for p in m.parameters()])))
    (full, w_full), (_, w_mid), (one, w_one) = results
    assert full.micro_batches == 1 and one.micro_batches == 4  # the A = 0 sample is left out
    assert full.sequences == 4 and full.tokens == 3 + 2 + 1 + 5
    torch.testing.assert_close(w_mid, w_full, rtol=0, atol=1e-6)
    torch.testing.assert_close(w_one, w_full, rtol=0, atol=1e-6)
    assert full.loss == pytest.approx(one.loss, abs=1e-6)
    # on-policy: every ratio is 1, nothing clipped, loss = -token-weighted mean advantage
    assert full.clip_fraction == 0 and full.mean_ratio == pytest.approx(1.0, abs=1e-5)
    expected = -(1.2 * 3 - 0.7 * 2 + 0.4 * 1 - 1.1 * 5) / 11
    assert full.loss == pytest.approx(expected, abs=1e-5)


def test_an_update_raises_good_completions_and_lowers_bad_ones(tiny):
    m = copy.deepcopy(tiny)
    samples = _on_policy(m, [([5, 6], [10, 11, 2], 1.0), ([5, 6], [12, 13, 2], -1.0)])
    before = [sum(s.behaviour_logprobs) for s in samples]
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(3):
        grpo.train_step(m, opt, samples, grpo.LossConfig(eps_low=10, eps_high=10))
    after = [
        sum(s.behaviour_logprobs)
        for s in _on_policy(m, [([5, 6], [10, 11, 2], 1.0), ([5, 6], [12, 13, 2], -1.0)])
    ]
    assert after[0] > before[0] and after[1] < before[1]


def test_nothing_to_learn_returns_none(tiny):
    opt = torch.optim.SGD(tiny.parameters(), lr=0.1)
    assert grpo.train_step(tiny, opt, [_sample(2, 2, 0.0)], grpo.LossConfig()) is None
    assert grpo.train_step(tiny, opt, [], grpo.LossConfig()) is None


def _groups(spec):
    """Samples from (group, completion tokens) pairs, advantage 1."""
    return [grpo.Sample([5], list(range(10, 10 + c)), [-1.0] * c, 1.0, g) for g, c in spec]


def _group_weights(samples, agg):
    """The share of the loss each group carries: sum over its samples of w_s x tokens."""
    out: dict[int, float] = {}
    for s, w in zip(samples, grpo.loss_weights(samples, agg), strict=True):
        out[s.group] = out.get(s.group, 0.0) + w * len(s.completion_ids)
    return out


def test_each_loss_aggregation_weighs_groups_as_documented():
    """Group 0 has 4 rollouts of 2 tokens, group 1 one rollout of 6 tokens (14 tokens, 5
    sequences): by hand, the weight of each group in the update."""
    samples = _groups([(0, 2), (0, 2), (0, 2), (0, 2), (1, 6)])
    expect = {
        "token-mean": {0: 8 / 14, 1: 6 / 14},
        "seq-mean-token-sum": {0: 8 / 5, 1: 6 / 5},
        "seq-mean-token-mean": {0: 4 / 5, 1: 1 / 5},
        "prompt-mean": {0: 1 / 2, 1: 1 / 2},
    }
    assert set(expect) == set(grpo.LOSS_AGGS)
    for agg, want in expect.items():
        assert _group_weights(samples, agg) == pytest.approx(want), agg
    # prompt-mean: a group's weight does not grow with its n (the point of the mode)
    more = _groups([(0, 2)] * 40 + [(1, 6)])
    assert _group_weights(more, "prompt-mean") == pytest.approx({0: 0.5, 1: 0.5})
    assert _group_weights(more, "token-mean")[0] == pytest.approx(80 / 86)
    with pytest.raises(ValueError, match="loss_agg"):
        grpo.loss_weights(samples, "sum-of-everything")


def test_the_update_follows_the_loss_aggregation(tiny):
    """On-policy (every ratio 1), the loss is minus the weighted mean advantage: under
    prompt-mean a group of 3 and a group of 1 count alike, under token-mean by their tokens;
    micro-batching leaves either update unchanged."""
    specs = [
        ([5, 6], [10, 2], 1.0, 0),
        ([5, 6], [11, 2], 1.0, 0),
        ([5, 6], [12, 2], 1.0, 0),
        ([7], [13, 14, 15, 2], -1.0, 1),
    ]
    base = _on_policy(tiny, [(p, c, a) for p, c, a, _ in specs])
    samples = [
        grpo.Sample(s.prompt_ids, s.completion_ids, s.behaviour_logprobs, s.advantage, g)
        for s, (*_, g) in zip(base, specs, strict=True)
    ]
    want = {"prompt-mean": -(0.5 * 1.0 + 0.5 * -1.0), "token-mean": -(6 * 1.0 - 4) / 10}
    for agg, loss in want.items():
        weights = []
        for max_tokens in (10_000, 1):
            m = copy.deepcopy(tiny)
            opt = torch.optim.SGD(m.parameters(), lr=0.1)
            cfg = grpo.LossConfig(loss_agg=agg)
            res = grpo.train_step(m, opt, samples, cfg, max_tokens=max_tokens, max_grad_norm=1e9)
            assert res.loss == pytest.approx(loss, abs=1e-5), agg
            weights.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
        torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=1e-6)
