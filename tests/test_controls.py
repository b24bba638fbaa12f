"""The controls' activation sets (dnn_search/controls.py) on real learned activations: copies equal
single:k and the check catches a replaced block; random is where meta-learning started; the
learned-amplitude scaling; mix groups. Fast, no Ray (the study's run of them is in test_study.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dnn_search import controls
from dnn_search.errors import UserError
from dnn_search.metalearn import MetaConfig, MetaLearner


def _learner(n=3, seed=5, ho=8) -> MetaLearner:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=gen)
    y = torch.randint(0, 3, (64,), generator=gen)
    cfg = MetaConfig(n_activations=n, inner_hidden_size=12, outer_hidden_size=ho, epochs=1, inner_batch_size=32,
                     steps=2, seed=seed)
    return MetaLearner(cfg, x[:48], y[:48], x[48:], y[48:], 3)


@pytest.fixture(scope="module")
def learned():
    learner = _learner()
    learner.step()
    learner.step()
    return learner.activations()


def test_random_is_what_meta_learning_started_from():
    start = _learner(n=3, seed=11).activations()
    again = controls.initial(start.base, 3, 8, 11)
    for key in ("w1", "b1", "w2", "b2"):
        np.testing.assert_array_equal(getattr(again, key), getattr(start, key))
    assert not np.array_equal(controls.initial(start.base, 3, 8, 12).w1, start.w1)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_copies_compute_single_k_and_a_replaced_block_is_caught(learned, k):
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    copied = controls.copies(learned, k)
    assert copied.n == learned.n
    assert controls.check_copies(learned, copied, k, x, 3, 12, seed=7) == 0.0
    # one block's activation replaced by another learned activation: the check must stop it
    other = k % learned.n  # a different row (0-based)
    w1, b1, w2, b2 = (a.copy() for a in (copied.w1, copied.b1, copied.w2, copied.b2))
    for arr, src in ((w1, learned.w1), (b1, learned.b1), (w2, learned.w2), (b2, learned.b2)):
        arr[learned.n - 1] = src[other]
    tampered = type(learned)(learned.base, w1, b1, w2, b2)
    with pytest.raises(UserError, match=f"does not reproduce single:{k}"):
        controls.check_copies(learned, tampered, k, x, 3, 12, seed=7)


def test_random_at_the_learned_amplitude_matches_the_learned_distance(learned):
    start = controls.initial(learned.base, learned.n, learned.outer_hidden_size, 99)
    target = controls.distance(learned)
    scaled = controls.scaled_to(start, target)
    got = controls.distance(scaled)
    assert np.all(np.abs(got / target - 1) < 0.05)
    np.testing.assert_allclose(got, target, rtol=1e-12)
    # only the output layer moved: the shape of g is kept
    np.testing.assert_array_equal(scaled.w1, start.w1)
    np.testing.assert_array_equal(scaled.b1, start.b1)
    # the distance is the RMS of f - base on the standard grid, computed independently here
    grid = np.linspace(-5, 5, 100)
    np.testing.assert_allclose(got, np.sqrt(((scaled.evaluate(grid) - np.sin(grid)) ** 2).mean(1)))


def test_mix_groups_disjoint_seeded_and_from_the_ids_only():
    ids = [f"n1-m{j}" for j in range(7)]
    groups = controls.mix_groups(ids, 2, seed=3)
    assert len(groups) == 3 and all(len(g) == 2 and len(set(g)) == 2 for g in groups)
    flat = [x for g in groups for x in g]
    assert len(set(flat)) == len(flat) and set(flat) <= set(ids)
    assert controls.mix_groups(list(reversed(ids)), 2, seed=3) == groups  # the draw ignores the ids' order
    assert controls.mix_groups(ids, 2, seed=4) != groups
    assert controls.mix_groups(ids[:3], 4, seed=3) == []


def test_combine_takes_row_zero_of_each_set(learned):
    parts = [learned.subset(2), learned.subset(0)]
    mixed = controls.combine(parts)
    np.testing.assert_array_equal(mixed.evaluate(np.linspace(-5, 5, 9)),
                                  learned.evaluate(np.linspace(-5, 5, 9))[[2, 0]])
    with pytest.raises(UserError, match="differ in base"):
        controls.combine([learned.subset(0), controls.initial(learned.base, 1, 4, 0)])
