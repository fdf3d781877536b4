"""A supersampled painter's canvas for the synthetic world: shape masks in body units, fills, patterns.

Shapes are evaluated with vectorised numpy on the pixel window that bounds them, at `supersample`
times the output resolution. Each `paint` call overwrites the colour, the parsing label and
(optionally) the DensePose part and U, V of the samples its mask covers, so later calls lie on top.
`finish` box-averages the colour down to the output size (anti-aliasing) and takes each output
pixel's labels from the sample nearest its centre.

Body units: x to the right of the person's centre line, y down from the top of the head, one unit
being the tallest person's height from head to sole (about 0.9 of the image at scale 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Point = tuple[float, float]

# Pattern geometry in body units (a torso is about 0.18 wide and 0.3 tall).
STRIPE_PERIOD = 0.07
STRIPE_DUTY = 0.45  # fraction of each period in the second colour
DOT_SPACING = 0.066
DOT_RADIUS = 0.017
CHECK_PERIOD = 0.08


@dataclass(frozen=True)
class Fill:
    """A garment's paint: `base` colour, and for patterns a `second` colour (RGB floats in [0,1])."""

    base: np.ndarray  # [3] float32
    pattern: str = "plain"  # one of world.PATTERNS
    second: np.ndarray | None = None  # [3] float32, needed unless pattern == 'plain'

    def colours(self, bx: np.ndarray, by: np.ndarray) -> np.ndarray:
        """[K,3] colours at K points given by body-unit coordinate arrays `bx`, `by` of shape [K]."""
        if self.pattern == "plain":
            return np.broadcast_to(self.base, (bx.shape[0], 3))
        second = pattern_mask(self.pattern, bx, by)
        if self.pattern == "checks":  # gingham: where one band crosses, mix; where both cross, second colour
            mix = 0.5 * (self.base + self.second)
            return np.select([second[:, None] == 2, second[:, None] == 1], [self.second, mix], self.base).astype(np.float32)
        return np.where(second[:, None] > 0, self.second, self.base)


def pattern_mask(pattern: str, bx: np.ndarray, by: np.ndarray) -> np.ndarray:
    """Per point: 0 = base colour, 1 = second colour (checks: 1 = one band, 2 = two bands crossing)."""
    if pattern == "stripes_h":
        return (np.mod(by / STRIPE_PERIOD, 1.0) < STRIPE_DUTY).astype(np.uint8)
    if pattern == "stripes_v":
        return (np.mod(bx / STRIPE_PERIOD + 0.5 * STRIPE_DUTY, 1.0) < STRIPE_DUTY).astype(np.uint8)
    if pattern == "dots":  # staggered rows of dots
        row = np.round(by / DOT_SPACING)
        shift = 0.5 * np.mod(row, 2.0)
        col = np.round(bx / DOT_SPACING - shift) + shift
        d2 = (bx - col * DOT_SPACING) ** 2 + (by - row * DOT_SPACING) ** 2
        return (d2 < DOT_RADIUS**2).astype(np.uint8)
    if pattern == "checks":
        half = 0.5 * CHECK_PERIOD
        band_x = np.mod(bx + 0.25 * CHECK_PERIOD, CHECK_PERIOD) < half
        band_y = np.mod(by, CHECK_PERIOD) < half
        return band_x.astype(np.uint8) + band_y.astype(np.uint8)
    raise ValueError(f"pattern: unknown pattern {pattern!r}")


@dataclass(frozen=True)
class Window:
    """A rectangle of canvas samples and the body-unit coordinates of their centres."""

    ys: slice
    xs: slice
    bx: np.ndarray  # [1,w] body-unit x of each column
    by: np.ndarray  # [h,1] body-unit y of each row

    @property
    def shape(self) -> tuple[int, int]:
        return (self.by.shape[0], self.bx.shape[1])

    def ellipse(self, c: Point, rx: float, ry: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mask, nx, ny): inside the ellipse, and coordinates normalised by the radii ([1,w], [h,1])."""
        nx = (self.bx - c[0]) / rx
        ny = (self.by - c[1]) / ry
        return nx * nx + ny * ny < 1.0, nx, ny

    def polygon(self, points: list[Point]) -> np.ndarray:
        """Inside a simple polygon (even-odd rule), evaluated row by row."""
        inside = np.zeros(self.shape, dtype=bool)
        for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True):
            if y1 == y2:
                continue
            crosses = (y1 > self.by) != (y2 > self.by)  # [h,1]
            x_at = x1 + (self.by - y1) * ((x2 - x1) / (y2 - y1))  # [h,1]
            inside ^= crosses & (self.bx < x_at)
        return inside

    def tube(self, a: Point, b: Point, r0: float, r1: float,
             t0: float | None = None, t1: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A limb-like tube along a->b, radius r0 at a to r1 at b.

        Ends are round caps unless cut flat at `t0` / `t1` (fractions along a->b, may lie outside [0,1]).
        Returns (mask, t, s): t the fraction along a->b; s the signed distance across the axis divided
        by the radius (-1 = image-left edge for a downward limb, +1 = image-right edge).
        """
        dx, dy = b[0] - a[0], b[1] - a[1]
        length = math.hypot(dx, dy)
        px = self.bx - a[0]
        py = self.by - a[1]
        t = (px * dx + py * dy) * (1.0 / (length * length))
        tc = np.clip(t, 0.0 if t0 is None else -np.inf, 1.0 if t1 is None else np.inf)
        ex = px - tc * dx
        ey = py - tc * dy
        radius = r0 + np.clip(t, 0.0, 1.0) * (r1 - r0)
        mask = ex * ex + ey * ey < radius * radius
        if t0 is not None:
            mask &= t >= t0
        if t1 is not None:
            mask &= t <= t1
        s = (dy * px - dx * py) / (length * radius)
        return mask, t, s


class Canvas:
    """Colour, parsing label and DensePose I/U/V at `size * supersample` samples per side."""

    def __init__(self, size: int, supersample: int, centre_x: float, top: float, scale: float) -> None:
        n = size * supersample
        self.size = size
        self.supersample = supersample
        self.rgb = np.zeros((n, n, 3), dtype=np.float32)
        self.label = np.zeros((n, n), dtype=np.uint8)
        self.part = np.zeros((n, n), dtype=np.uint8)
        self.u = np.zeros((n, n), dtype=np.float32)
        self.v = np.zeros((n, n), dtype=np.float32)
        self._n = n
        self._origin = (centre_x, top)  # image position (fractions of the side) of body-unit (0, 0)
        self._scale = scale  # image fraction per body unit
        centres = (np.arange(n, dtype=np.float32) + 0.5) / n
        self._bx = ((centres - centre_x) / scale)[None, :]
        self._by = ((centres - top) / scale)[:, None]

    def _index(self, value: float, axis: int) -> int:
        return int(math.floor((self._origin[axis] + value * self._scale) * self._n))

    def window(self, x0: float, x1: float, y0: float, y1: float) -> Window | None:
        """The samples whose centres may fall in the body-unit box [x0,x1] x [y0,y1]; None if off-canvas."""
        c0 = max(self._index(x0, 0), 0)
        c1 = min(self._index(x1, 0) + 2, self._n)
        r0 = max(self._index(y0, 1), 0)
        r1 = min(self._index(y1, 1) + 2, self._n)
        if c0 >= c1 or r0 >= r1:
            return None
        return Window(slice(r0, r1), slice(c0, c1), self._bx[:, c0:c1], self._by[r0:r1, :])

    def full(self) -> Window:
        """The whole canvas."""
        return Window(slice(0, self._n), slice(0, self._n), self._bx, self._by)

    def paint(self, win: Window, mask: np.ndarray, label: int, fill: Fill, shade: np.ndarray | float = 1.0,
              part: int | np.ndarray | None = None, u: np.ndarray | None = None, v: np.ndarray | None = None) -> None:
        """Paint `fill` times `shade` on the masked samples; set their label and, if given, part/U/V.

        `shade`, `part`, `u`, `v` are scalars or arrays broadcastable to the window's shape.
        """
        if not mask.any():
            return
        shape = win.shape
        bx = np.broadcast_to(win.bx, shape)[mask]
        by = np.broadcast_to(win.by, shape)[mask]
        colours = fill.colours(bx, by)
        if not np.isscalar(shade):
            colours = colours * np.broadcast_to(shade, shape)[mask][:, None]
        elif shade != 1.0:
            colours = colours * shade
        self.rgb[win.ys, win.xs][mask] = colours
        self.label[win.ys, win.xs][mask] = label
        if part is not None:
            self.part[win.ys, win.xs][mask] = part if np.isscalar(part) else np.broadcast_to(part, shape)[mask]
            self.u[win.ys, win.xs][mask] = np.clip(np.broadcast_to(u, shape)[mask], 0.0, 1.0)
            self.v[win.ys, win.xs][mask] = np.clip(np.broadcast_to(v, shape)[mask], 0.0, 1.0)

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image uint8 [H,W,3], label [H,W], part [H,W], u [H,W], v [H,W]) at the output size."""
        s, k = self.size, self.supersample
        rows = self.rgb.reshape(s, k, s * k * 3)  # box average: k rows, then k columns (faster than .mean)
        acc = rows[:, 0].copy()
        for i in range(1, k):
            acc += rows[:, i]
        cols = acc.reshape(s, s, k, 3)
        rgb = cols[:, :, 0].copy()
        for i in range(1, k):
            rgb += cols[:, :, i]
        rgb *= 1.0 / (k * k)
        image = np.clip(rgb * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)
        c = k // 2
        pick = (slice(c, None, k), slice(c, None, k))
        return image, self.label[pick].copy(), self.part[pick].copy(), self.u[pick].copy(), self.v[pick].copy()
