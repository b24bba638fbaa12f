"""A line chart drawn with Pillow: the activation plot each search trial draws as it ends.

Why not matplotlib, which draws every other figure of the tool (`plots.py`): a trial draws this chart
while its slot waits for the next trial, and matplotlib took 0.07 s a chart there, and 0.46 s for a
worker's first (its import). This draws the same chart on the same layout in 0.014 to 0.024 s, 0.04 to
0.07 s the first: the hand-over between trials went from 1.1-1.3 % to 0.6-0.7 % of a search's wall
time at `mnist1d.yaml` sizes (docs/benchmarks_search.md, fourth round).

How: everything is drawn at `SUPERSAMPLE` times the size and reduced at the end (anti-aliased lines
and text); text is DejaVu Sans, matplotlib's own font, found without importing matplotlib (Pillow's
default font where it is missing); the PNG is compressed at zlib level 1 (level 6 took 9 ms of each
plot; files ~15 % larger, still smaller than matplotlib's). Ticks fall on round numbers (1, 2, 2.5 or 5
times a power of ten); tick labels beyond 10^±3 share an offset ("1e4": above the y axis, under the
right end of the x axis), as matplotlib's scientific style does, so that the fixed margins fit every
label.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnn_search.atomic import atomic_path

DPI = 110                 # pixels per inch: line widths and ticks in points -> pixels
TEXT_DPI = 96             # the same for text, sized as the tool's matplotlib figures show it (there a
                          # 12-point title is 16 pixels high)
SUPERSAMPLE = 2           # drawn this many times larger, then reduced
MARGINS = (0.13, 0.97, 0.12, 0.88)  # left, right, bottom, top: the axes box, as fractions of the image
GRID_GREY = (217, 217, 217)
DASH = (3.7, 1.6)         # on, off, in line widths (matplotlib's "--")
VIRIDIS = ((68, 1, 84), (72, 40, 120), (62, 73, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137),
           (53, 183, 121), (110, 206, 88), (181, 222, 43), (253, 231, 37))  # viridis at 0, 1/9, ..., 1


@dataclass(frozen=True)
class Series:
    """One line: y over the chart's x (non-finite points are left out), its colour, width in points,
    dashed or solid, and its legend label (None: not in the legend)."""

    y: np.ndarray
    color: tuple[int, int, int]
    width: float = 1.5
    dashed: bool = False
    label: str | None = None


def viridis(fractions) -> list[tuple[int, int, int]]:
    """Colours of the viridis map at FRACTIONS in [0, 1] (linear between ten samples of it)."""
    table = np.asarray(VIRIDIS, dtype=float)
    pos = np.clip(np.asarray(fractions, dtype=float), 0, 1) * (len(table) - 1)
    lo = np.minimum(np.floor(pos).astype(int), len(table) - 2)
    mix = (pos - lo)[:, None]
    return [tuple(int(round(c)) for c in row) for row in table[lo] * (1 - mix) + table[lo + 1] * mix]


def nice_ticks(lo: float, hi: float, target: int = 6) -> np.ndarray:
    """Round-numbered ticks inside [LO, HI], about TARGET of them."""
    raw = (hi - lo) / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = first + step * np.arange(int(math.floor((hi - first) / step + 1e-9)) + 1)
    return np.round(ticks, max(0, 2 - math.floor(math.log10(step)))) + 0.0  # 0.30000000000000004 -> 0.3, -0.0 -> 0


def tick_labels(ticks: np.ndarray) -> tuple[list[str], str]:
    """Labels of TICKS and the offset they share: beyond 10^±3 the labels are ticks / 10^k and the
    offset reads "1ek"."""
    biggest = float(np.max(np.abs(ticks)))
    exponent = math.floor(math.log10(biggest)) if biggest > 0 else 0
    offset = exponent if (exponent > 3 or exponent < -3) else 0
    scaled = ticks / 10.0 ** offset
    step = float(np.min(np.diff(scaled))) if len(scaled) > 1 else 1.0
    decimals = 0
    while decimals < 6 and np.max(np.abs(scaled - np.round(scaled, decimals))) > step * 1e-6:
        decimals += 1
    labels = [f"{v:.{decimals}f}".replace("-", "\u2212") for v in scaled]
    return labels, (f"1e{offset}" if offset else "")


def _font(points: float):
    from PIL import ImageFont
    size = max(1, int(round(points * TEXT_DPI / 72 * SUPERSAMPLE)))
    spec = importlib.util.find_spec("matplotlib")  # its bundled DejaVu Sans; matplotlib is not imported
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def _limits(values: np.ndarray) -> tuple[float, float]:
    """The data range with matplotlib's 5 % margin on each side (a flat range gets a unit one)."""
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    if hi - lo <= 1e-12 * max(1.0, abs(lo), abs(hi)):  # flat: 5 % of the value, or 1 around zero
        pad = abs(lo) * 0.05 or 1.0
        return lo - pad, hi + pad
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _runs(points: np.ndarray, keep: np.ndarray) -> list[np.ndarray]:
    """The stretches of consecutive POINTS where KEEP holds (each at least two points long)."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
    return [points[a:b] for a, b in zip(edges[::2], edges[1::2]) if b - a >= 2]


def _dashes(line: np.ndarray, width_px: float) -> list[np.ndarray]:
    """LINE (pixel points) cut into dashes of the `DASH` pattern along its length."""
    steps = np.hypot(*np.diff(line, axis=0).T)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    fine = np.arange(0.0, along[-1], max(width_px / 4, 0.5))  # points every fraction of a line width
    dense = np.column_stack([np.interp(fine, along, line[:, 0]), np.interp(fine, along, line[:, 1])])
    on, off = (d * width_px for d in DASH)
    return _runs(dense, (fine % (on + off)) < on)


def line_chart(path, x, series: list[Series], *, title: str, xlabel: str, ylabel: str,
               size: tuple[int, int] = (660, 440), legend_points: float = 8.0) -> Path:
    """SERIES over X as a PNG chart at PATH (written atomically), SIZE pixels, with a legend of the
    labelled series in the corner where it hides the fewest points."""
    from PIL import Image, ImageDraw
    s = SUPERSAMPLE
    width, height = size[0] * s, size[1] * s
    px = DPI / 72 * s  # pixels per point
    left, right = MARGINS[0] * width, MARGINS[1] * width
    bottom, top = (1 - MARGINS[2]) * height, (1 - MARGINS[3]) * height
    x = np.asarray(x, dtype=float)
    ys = [np.asarray(line.y, dtype=float) for line in series]
    x_lo, x_hi = _limits(x)
    y_lo, y_hi = _limits(np.concatenate(ys) if ys else np.zeros(1))

    def to_px(xv, yv):
        return (left + (np.asarray(xv) - x_lo) / (x_hi - x_lo) * (right - left),
                bottom - (np.asarray(yv) - y_lo) / (y_hi - y_lo) * (bottom - top))

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    tick_font, label_font, title_font = _font(10), _font(10), _font(12)
    x_ticks, y_ticks = nice_ticks(x_lo, x_hi, 6), nice_ticks(y_lo, y_hi, 8)  # as many as matplotlib fits here
    x_px, _ = to_px(x_ticks, y_lo)
    _, y_px = to_px(x_lo, y_ticks)
    for xp in x_px:  # the grid, under the lines
        draw.line([(xp, top), (xp, bottom)], fill=GRID_GREY, width=max(1, round(0.8 * px)))
    for yp in y_px:
        draw.line([(left, yp), (right, yp)], fill=GRID_GREY, width=max(1, round(0.8 * px)))

    pixel_lines = [np.column_stack(to_px(x, y)) for y in ys]
    for line, y, points in zip(series, ys, pixel_lines):
        line_px = line.width * px
        for run in _runs(points, np.isfinite(y)):
            for piece in (_dashes(run, line_px) if line.dashed else [run]):
                draw.line([tuple(p) for p in piece], fill=line.color, width=max(1, round(line_px)))

    frame = max(1, round(0.8 * px))
    draw.rectangle([left, top, right, bottom], outline="black", width=frame)
    tick_len, pad = 3.5 * px, 3.5 * px
    labels, offset = tick_labels(x_ticks)
    for xp, text in zip(x_px, labels):
        draw.line([(xp, bottom), (xp, bottom + tick_len)], fill="black", width=frame)
        draw.text((xp, bottom + tick_len + pad), text, fill="black", font=tick_font, anchor="mt")
    if offset:  # under the right end of the axis, as matplotlib puts it
        draw.text((right, bottom + tick_len + pad + 1.2 * tick_font.size), offset, fill="black", font=tick_font,
                  anchor="rt")
    labels, offset = tick_labels(y_ticks)
    for yp, text in zip(y_px, labels):
        draw.line([(left - tick_len, yp), (left, yp)], fill="black", width=frame)
        draw.text((left - tick_len - pad, yp), text, fill="black", font=tick_font, anchor="rm")
    if offset:
        draw.text((left, top - pad), offset, fill="black", font=tick_font, anchor="ld")

    draw.text(((left + right) / 2, height - 0.01 * height), xlabel, fill="black", font=label_font, anchor="md")
    box = draw.textbbox((0, 0), ylabel, font=label_font, anchor="lt")
    turned = Image.new("RGB", (box[2] + 2, box[3] + 2), "white")
    ImageDraw.Draw(turned).text((1, 1), ylabel, fill="black", font=label_font, anchor="lt")
    turned = turned.rotate(90, expand=True)
    image.paste(turned, (int(0.01 * width), int((top + bottom) / 2 - turned.height / 2)))
    title_y = top - pad - (2.2 * pad + tick_font.size if offset else 2 * pad)
    draw.text(((left + right) / 2, title_y), title, fill="black", font=title_font, anchor="md")

    shown = np.concatenate([p[np.isfinite(p).all(axis=1)] for p in pixel_lines]) if pixel_lines else np.zeros((0, 2))
    _legend(draw, series, shown, (left, top, right, bottom), _font(legend_points), px)
    image = image.reduce(s)
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)
    return path


def _legend(draw, series, points: np.ndarray, axes, font, px) -> None:
    """The labelled series' legend, in the corner of the axes box where its box hides the fewest of
    POINTS (the lines' pixel points)."""
    entries = [line for line in series if line.label]
    if not entries:
        return
    left, top, right, bottom = axes
    row = font.size * 1.3
    swatch, gap, inset = 2 * font.size, 0.8 * font.size, 0.5 * font.size
    w = inset * 2 + swatch + gap + max(font.getlength(line.label) for line in entries)
    h = inset * 2 + row * len(entries)
    corners = [(right - w - inset, top + inset), (left + inset, top + inset),
               (left + inset, bottom - h - inset), (right - w - inset, bottom - h - inset)]

    def hidden(corner) -> int:
        x0, y0 = corner
        return int(((points[:, 0] >= x0) & (points[:, 0] <= x0 + w)
                    & (points[:, 1] >= y0) & (points[:, 1] <= y0 + h)).sum())
    x0, y0 = min(corners, key=hidden)
    draw.rectangle([x0, y0, x0 + w, y0 + h], fill="white", outline=(204, 204, 204), width=max(1, round(0.8 * px)))
    for i, line in enumerate(entries):
        yc = y0 + inset + row * (i + 0.5)
        segment = np.array([[x0 + inset, yc], [x0 + inset + swatch, yc]])
        for piece in (_dashes(segment, line.width * px) if line.dashed else [segment]):
            draw.line([tuple(p) for p in piece], fill=line.color, width=max(1, round(line.width * px)))
        draw.text((x0 + inset + swatch + gap, yc), line.label, fill="black", font=font, anchor="lm")
