"""The activation plot every search trial draws as it ends: its margins are fixed for its one
layout (no crop to the drawn content, which draws the figure twice), so it must keep every label
inside the image whatever the learned values are."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dnn_search.activations import ActivationSet
from dnn_search.plots import plot_activations


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e2, 1e3, 1e4, 1e7])
def test_the_activation_plot_keeps_every_label_inside_the_image(tmp_path, scale):
    rng = np.random.default_rng(0)
    n, hidden = 10, 50
    acts = ActivationSet("tanh", rng.normal(size=(n, hidden)), rng.normal(size=(n, hidden)),
                         scale * rng.normal(size=(n, hidden)), -scale * np.abs(rng.normal(size=n)))
    path = plot_activations(acts, tmp_path / "a.png", "trial 1a2b3c4d at step 300: 10 learned tanh activation(s)")
    pixels = np.asarray(Image.open(path).convert("L"))
    assert pixels.shape == (440, 660)  # 6 x 4 inches at 110 dpi
    assert pixels.min() < 100  # something was drawn
    # a label running off an edge leaves dark pixels in the outermost rows and columns
    border = np.concatenate([pixels[:2].ravel(), pixels[-2:].ravel(), pixels[:, :2].ravel(), pixels[:, -2:].ravel()])
    assert border.min() == 255


# ------------------------------------------------------------------ the chart itself (linechart.py)

@pytest.mark.parametrize("lo, hi", [(-5.55, 5.55), (-0.00037, 0.0021), (-3.7e4, 3.1e4), (0.2, 0.3), (-1.1, 1.1)])
def test_ticks_fall_on_round_numbers_inside_the_range(lo, hi):
    from dnn_search.linechart import nice_ticks
    ticks = nice_ticks(lo, hi, 8)
    assert 4 <= len(ticks) <= 10, ticks
    assert ticks[0] >= lo and ticks[-1] <= hi
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert any(np.isclose(mantissa, m) for m in (1, 2, 2.5, 5)), steps[0]


def test_tick_labels_share_an_offset_beyond_a_thousand_and_keep_the_decimals_they_need():
    from dnn_search.linechart import tick_labels
    assert tick_labels(np.array([-2e4, 0.0, 2e4])) == (["\u22122", "0", "2"], "1e4")
    assert tick_labels(np.array([0.0, 0.25, 0.5])) == (["0.00", "0.25", "0.50"], "")
    assert tick_labels(np.array([-500.0, 0.0, 500.0])) == (["\u2212500", "0", "500"], "")
    assert tick_labels(np.array([0.0, 2e-4, 4e-4]))[1] == "1e-4"


def _runs_of(mask: np.ndarray) -> int:
    """How many separate stretches of True a 1-D mask has."""
    return int(np.count_nonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])) == 1))


def test_the_chart_draws_each_line_in_its_colour_solid_or_dashed_and_leaves_out_non_finite_points(tmp_path):
    from dnn_search.linechart import Series, line_chart
    x = np.linspace(0, 10, 101)
    broken = np.full_like(x, -1.0)
    broken[45:56] = np.nan  # a gap in the data stays a gap in the line
    series = [Series(np.full_like(x, 1.0), (220, 0, 0)), Series(np.zeros_like(x), (0, 0, 220), dashed=True),
              Series(broken, (0, 160, 0))]
    path = line_chart(tmp_path / "c.png", x, series, title="t", xlabel="x", ylabel="y")
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)

    def row_of(color):
        near = (np.abs(rgb - np.array(color)).sum(axis=2) < 60)
        row = int(np.argmax(near.sum(axis=1)))
        assert not near[:row - 4].any() and not near[row + 5:].any()  # a flat line, drawn nowhere else
        return near[row]
    red, blue, green = row_of((220, 0, 0)), row_of((0, 0, 220)), row_of((0, 160, 0))
    axes_width = 0.84 * 660
    assert _runs_of(red) == 1 and red.sum() > 0.85 * axes_width  # one unbroken line across the axes
    assert _runs_of(blue) >= 20 and 0.4 * axes_width < blue.sum() < 0.85 * axes_width  # dashes
    assert _runs_of(green) == 2  # the NaN stretch is not drawn


@pytest.mark.parametrize("value", [0.0, 3.0, -2e5])
def test_a_flat_chart_is_drawn_in_the_middle_of_its_axes(tmp_path, value):
    from dnn_search.linechart import Series, line_chart
    x = np.linspace(-5, 5, 100)
    path = line_chart(tmp_path / "f.png", x, [Series(np.full_like(x, value), (220, 0, 0), label="flat")],
                      title="t", xlabel="x", ylabel="y")
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    rows = np.flatnonzero((np.abs(rgb - np.array((220, 0, 0))).sum(axis=2) < 60).sum(axis=1) > 300)
    assert len(rows) and abs(rows.mean() - 220) < 5  # the middle row of the axes box (rows 52.8 to 387.2)


def test_x_tick_labels_beyond_a_thousand_show_their_offset_under_the_axis(tmp_path):
    # the labels read 0, 0.5, ... 2.0: without the "1e4" beside them they would claim the wrong x
    from dnn_search.linechart import Series, line_chart
    x = np.linspace(0, 2e4, 100)
    path = line_chart(tmp_path / "x.png", x, [Series(np.sin(x / 3e3), (220, 0, 0))], title="t", xlabel="x",
                      ylabel="y")
    pixels = np.asarray(Image.open(path).convert("L"))
    # under the tick labels at the axis' right end: the last label ("2.0", rows ~396-408) ends at
    # column ~625, the axis at 640
    assert pixels[410:430, 628:641].min() < 100
