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
