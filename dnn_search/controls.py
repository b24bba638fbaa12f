"""The activation sets of a diversity study's controls (docs/design.md, "Diversity studies").

A fair "n diverse learned activations beat one" still leaves rival explanations, and each control
builds the activation set that isolates one of them; validation then trains it like any other:
- `copies`: n blocks that all use one learned activation. It must compute exactly what `single:k`
  computes (same classifier init, same outputs before training), so that the n-block machinery
  itself can be ruled out as the cause of a difference (`check_copies`);
- `mix`: n blocks using activations learned by n *different* one-activation meta-learning runs
  (`combine`, `mix_groups`): diversity without joint meta-learning;
- `random`: the untrained activations meta-learning started from (`initial`), n different against
  one, raw and scaled to the learned amplitude (`scaled_to`, measured by `distance`): diversity of
  shape without learning, at a realistic size.

Plain numpy/torch on `ActivationSet`; nothing here knows about Ray, Optuna or a study's folders.
"""
from __future__ import annotations

import numpy as np
import torch

from dnn_search.activations import ActivationSet, base_value, default_init, standard_grid
from dnn_search.errors import UserError


def copies(acts: ActivationSet, k: int, n: int | None = None) -> ActivationSet:
    """N (default: acts.n) copies of activation K (1-based) as one set: every block the same function."""
    if not 1 <= k <= acts.n:
        raise UserError(f"copies: activation {k} does not exist (the set has {acts.n})")
    rows = [k - 1] * (acts.n if n is None else n)
    return ActivationSet(acts.base, acts.w1[rows], acts.b1[rows], acts.w2[rows], acts.b2[rows])


def combine(sets: list[ActivationSet], rows: list[int] | None = None) -> ActivationSet:
    """One set whose activation i is row ROWS[i] (default 0) of SETS[i]: the `mix` control's set.
    Every set must share the base and the sub-network width (they come from one arm's files)."""
    if not sets:
        raise UserError("combine: no activation sets given")
    rows = [0] * len(sets) if rows is None else list(rows)
    bases = {s.base for s in sets}
    widths = {s.outer_hidden_size for s in sets}
    if len(bases) != 1 or len(widths) != 1:
        raise UserError(f"combine: the sets differ in base {sorted(bases)} or width {sorted(widths)}")
    pick = [(s, r) for s, r in zip(sets, rows)]
    return ActivationSet(sets[0].base, *(np.stack([getattr(s, key)[r] for s, r in pick])
                                         for key in ("w1", "b1", "w2", "b2")))


def mix_groups(ids: list[str], n: int, seed: int) -> list[list[str]]:
    """floor(len(IDS) / N) disjoint groups of N distinct ids, drawn by a seeded permutation of IDS
    (sorted first, so the draw depends only on which ids there are, not on their order)."""
    if n < 1:
        raise UserError(f"mix_groups: n must be at least 1, got {n}")
    order = sorted(ids)
    if len(set(order)) != len(order):
        raise UserError("mix_groups: duplicate replicate ids")
    perm = np.random.default_rng(seed).permutation(len(order))
    count = len(order) // n
    return [[order[i] for i in perm[g * n:(g + 1) * n]] for g in range(count)]


def initial(base: str, n: int, outer_hidden: int, meta_seed: int, dtype=torch.float32) -> ActivationSet:
    """The activations meta-learning with META_SEED starts from: the first draw of its generator
    (`metalearn.MetaLearner` seeds torch.Generator with cfg.seed and draws `default_init` first)."""
    generator = torch.Generator().manual_seed(int(meta_seed))
    return ActivationSet.from_tensors(base, default_init(n, outer_hidden, generator, dtype))


def distance(acts: ActivationSet, x: np.ndarray | None = None) -> np.ndarray:
    """‖f_i − base‖ per activation: the root mean square of f_i(x) − base(x) over X (default: the
    standard grid of the activation files, 100 points on [-5, 5]), shape (n,)."""
    x = standard_grid() if x is None else np.asarray(x, dtype=np.float64)
    base = base_value(acts.base, torch.as_tensor(x)).numpy()
    return np.sqrt(np.mean((acts.evaluate(x) - base[None, :]) ** 2, axis=1))


def scaled_to(acts: ActivationSet, target: np.ndarray, x: np.ndarray | None = None) -> ActivationSet:
    """ACTS with each g_i's output layer (w2_i, b2_i) scaled so that ‖f_i − base‖ = TARGET[i].

    f − base = 0.2 g and g is linear in its output layer, so the scale c_i = TARGET[i] / ‖f_i − base‖
    makes the distance exact (to rounding) while keeping g_i's shape."""
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), (acts.n,))
    now = distance(acts, x)
    if not (now > 0).all():
        raise UserError("scaled_to: an activation equals its base function, so it has no amplitude to scale")
    scale = target / now
    return ActivationSet(acts.base, acts.w1, acts.b1, acts.w2 * scale[:, None], acts.b2 * scale)


def check_copies(acts: ActivationSet, copied: ActivationSet, k: int, x: torch.Tensor, output_size: int,
                 hidden: int, seed: int) -> float:
    """Outputs of the `copies` network (COPIED: n blocks) and of `single:K` of ACTS, built from the same
    classifier init (SEED) and evaluated on the batch X before any training. Returns their largest
    absolute difference, which is 0.0 when the n-block path computes what the single path does;
    anything else is a UserError (a study must not go on comparing networks that differ by
    construction)."""
    from dnn_search.actfile import LoadedActivations
    from dnn_search.validation import build_for_mode

    def outputs(mode: str, source: ActivationSet):
        loaded = LoadedActivations(source.base, source.n, source, standard_grid(), source.evaluate(standard_grid()))
        torch.manual_seed(seed)
        net = build_for_mode(mode, loaded, x.shape[1], output_size, hidden)
        net.eval()
        with torch.no_grad():
            return net(x)
    single, many = outputs(f"single:{k}", acts), outputs("diverse", copied)
    diff = float((single - many).abs().max())
    if diff != 0.0:
        raise UserError(f"the copies control does not reproduce single:{k}: outputs before training differ "
                        f"by up to {diff:.3g} on the check batch (same init seed {seed}); the n-block network "
                        "is not the single-activation network it should copy")
    return diff
