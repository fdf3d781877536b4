"""Painting one person, layer by layer, from an `Attributes` record (a pure function: no randomness).

Painter's order, back to front: background, hair behind the head, legs, shoes, torso and neck skin,
lower garment or dress skirt, top or dress bodice, arms, sleeves, jacket, hands, hair strands over the
shoulders, head and face, hair on the head. Garments that follow the body (tops, sleeves, trouser
legs) write the DensePose part of the body beneath them; loose shapes (skirts, hair, a trouser's
seat) keep what lies beneath, so I = 0 where only a skirt's flare or hair covers the background.
"""

from __future__ import annotations

import numpy as np

from ficekit.synthetic.body import ARMPIT_Y, NECK_Y, SIDES, WAIST_Y, Body, Limb
from ficekit.synthetic.body import DENSEPOSE_PARTS as PARTS
from ficekit.synthetic.canvas import Canvas, Fill, Point, Window
from ficekit.synthetic.world import HAIR_COLOURS, PALETTE, PARSING_LABELS, SKIN_TONES, Attributes, Garment

L = PARSING_LABELS
SOLE_Y = 0.905  # body units: the bottom of the shoes
TOP_MARGIN = 0.045  # image fraction above the head top of a full-scale person
FEET_AT = 0.955  # image fraction where the soles stand
V2_VIEW_TOP = 0.035  # body units shown above the head top in the v2 (upper-body) framing, at scale 1
V2_VIEW_BOTTOM = 0.37  # body y at the v2 frame's bottom edge at scale 1 (between waist and hips; a top's hem is at 0.47)
TOP_HEMS = {"tshirt": 0.47, "shirt": 0.48, "sweater": 0.47, "tank_top": 0.465, "dress": 0.37}
SKIRT_HEMS = {"mini": 0.56, "knee": 0.665, "midi": 0.77}
BAND_SHADE = 0.8  # ribbed collars, cuffs and hems; collars and plackets


def _rgb(values: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32) / 255.0


def _fill(g: Garment) -> Fill:
    second = _rgb(PALETTE[g.secondary]) if g.secondary is not None else None
    return Fill(_rgb(PALETTE[g.colour]), g.pattern, second)


def _bbox(points: list[Point], pad: float = 0.0) -> tuple[float, float, float, float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return min(xs) - pad, max(xs) + pad, min(ys) - pad, max(ys) + pad


def _tube_window(cv: Canvas, a: Point, b: Point, r: float) -> Window | None:
    return cv.window(*_bbox([a, b], r))


def _paint_tube(cv: Canvas, limb: Limb, label: int, fill: Fill, grow: float = 0.0, flare: float = 0.0,
                t0: float | None = None, t1: float | None = None, part: bool = True,
                band: tuple[float, float] | None = None) -> None:
    """Paint a tube around `limb` (radius + grow, + flare more at b), optionally cut at t0/t1.

    `band` darkens the stretch t in [band[0], band[1]] (cuffs, hems).
    """
    r0, r1 = limb.r0 + grow, limb.r1 + grow + flare
    a, b = limb.a, limb.b
    # a cut beyond b (t1 > 1) reaches further than b: extend the window accordingly
    end = (a[0] + (b[0] - a[0]) * max(1.0, t1 or 1.0), a[1] + (b[1] - a[1]) * max(1.0, t1 or 1.0))
    win = _tube_window(cv, a, end, max(r0, r1))
    if win is None:
        return
    mask, t, s = win.tube(a, b, r0, r1, t0, t1)
    shade = 1.0 - 0.22 * s * s
    if band is not None:
        shade = np.where((t >= band[0]) & (t <= band[1]), shade * BAND_SHADE, shade)
    if part:
        cv.paint(win, mask, label, fill, shade, limb.part, 0.5 + 0.5 * s, t)
    else:
        cv.paint(win, mask, label, fill, shade)


def _background(cv: Canvas, at: Attributes) -> None:
    top, bottom = _rgb(at.background.top), _rgb(at.background.bottom)
    rows = (np.arange(cv.rgb.shape[0], dtype=np.float32) + 0.5) / cv.rgb.shape[0]
    cv.rgb[:] = (top + (bottom - top) * rows[:, None])[:, None, :]


def _hair_behind(cv: Canvas, body: Body, at: Attributes, hair: Fill) -> None:
    rx = body.head_rx
    if at.hair_style in ("long", "bob"):
        bottom = 0.225 if at.hair_style == "long" else 0.135
        limb = Limb((0.0, 0.07), (0.0, bottom), rx + 0.012, rx + (0.022 if at.hair_style == "long" else 0.016), 0)
        _paint_tube(cv, limb, L["hair"], hair, t1=1.0, part=False)
    if at.hair_style == "bun":
        c = (0.0, body.head_centre[1] - body.head_ry - 0.012)
        if (win := cv.window(-0.03, 0.03, c[1] - 0.03, c[1] + 0.03)) is not None:
            mask, nx, ny = win.ellipse(c, 0.027, 0.024)
            cv.paint(win, mask, L["hair"], hair, 1.0 - 0.25 * (nx * nx + ny * ny))


def _legs_and_shoes(cv: Canvas, body: Body, at: Attributes, skin: Fill) -> None:
    for side, _ in SIDES:
        for limb in body.legs[side]:
            _paint_tube(cv, limb, L["legs"], skin)
    shoe = Fill(_rgb(PALETTE[at.shoes]))
    for side, sign in SIDES:
        ax, ay = body.ankles[side]
        a, b = (ax - 0.013 + 0.005 * sign, ay + 0.019), (ax + 0.013 + 0.005 * sign, ay + 0.019)
        if (win := _tube_window(cv, a, b, 0.022)) is None:
            continue
        mask, t, s = win.tube(a, b, 0.021, 0.021)
        shade = np.where(s < -0.55, 0.7, 1.0 - 0.2 * s * s)  # s < 0: below the a->b axis (the sole)
        cv.paint(win, mask, L["shoes"], shoe, shade, PARTS[f"foot_{side}"], t, 0.5 - 0.5 * s)


def _torso_skin(cv: Canvas, body: Body, skin: Fill) -> None:
    outline = body.outline()
    if (win := cv.window(*_bbox(outline))) is not None:
        mask = win.polygon(outline)
        u, v = body.torso_uv(win.bx, win.by)
        shade = 1.0 - 0.15 * (win.bx / body.shoulder) ** 2
        central = np.abs(win.bx) < 0.05  # neck and neckline skin is 'head', bare shoulders 'arms'
        cv.paint(win, mask & central, L["head"], skin, shade, PARTS["torso"], u, v)
        cv.paint(win, mask & ~central, L["arms"], skin, shade, PARTS["torso"], u, v)
    a, b = (0.0, body.head_centre[1] + 0.03), (0.0, NECK_Y + 0.012)
    if (win := _tube_window(cv, a, b, body.neck_r)) is not None:
        mask, t, s = win.tube(a, b, body.neck_r, body.neck_r * 1.1, 0.0, 1.0)
        u, _ = body.torso_uv(win.bx, win.by)
        cv.paint(win, mask, L["head"], skin, 0.85 - 0.15 * s * s, PARTS["torso"], u, 0.0)


def _lower(cv: Canvas, body: Body, g: Garment, label: int) -> None:
    fill = _fill(g)
    if g.kind in ("skirt", "dress"):
        top = WAIST_Y + 0.01 if g.kind == "dress" else 0.37
        hem = SKIRT_HEMS[g.length]
        half = body.hip + 0.01 + 0.3 * (hem - 0.48)  # flares out below a top's hem (0.47-0.48)
        side = [(body.waist + 0.003, top), (body.hip + 0.006, 0.44), (body.hip + 0.01, 0.48), (half, hem),
                (0.5 * half, hem + 0.009)]
        outline = [(-x, y) for x, y in side] + [(0.0, hem + 0.011)] + [(x, y) for x, y in reversed(side)]
        if (win := cv.window(*_bbox(outline))) is not None:
            widths = body.hip + 0.01 + 0.3 * np.clip(win.by - 0.48, 0.0, None)
            cv.paint(win, win.polygon(outline), label, fill, 1.0 - 0.14 * (win.bx / widths) ** 2)
        return
    side = [(body.waist + 0.004, 0.37), (body.hip + 0.006, 0.44), (body.hip + 0.004, 0.5)]
    outline = [(-x, y) for x, y in side] + [(0.0, 0.52)] + [(x, y) for x, y in reversed(side)]
    if (win := cv.window(*_bbox(outline))) is not None:
        cv.paint(win, win.polygon(outline), label, fill, 1.0 - 0.12 * (win.bx / body.hip) ** 2)
    for side_name, _ in SIDES:
        thigh, shin = body.legs[side_name]
        if g.kind == "shorts":
            _paint_tube(cv, thigh, label, fill, grow=0.006, flare=0.004, t0=-0.1, t1=0.62)
            continue
        straight = Limb(thigh.a, thigh.b, thigh.r0, shin.r0, thigh.part)  # trousers hang straight
        _paint_tube(cv, straight, label, fill, grow=0.006, t0=-0.1, t1=1.0)
        _paint_tube(cv, Limb(shin.a, shin.b, shin.r0, shin.r0 * 0.95, shin.part), label, fill,
                    grow=0.006, t1=0.97)


def _neckline(win: Window, kind: str, sleeve: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(cut, band): samples removed from a top at the neck, and the ribbed/collar band around the cut."""
    if kind == "tank_top" or (kind == "dress" and sleeve == "sleeveless"):
        cut, _, _ = win.ellipse((0.0, NECK_Y - 0.01), 0.038, 0.062)
        return cut, np.zeros_like(cut)
    if kind == "shirt":
        cut = win.polygon([(-0.024, NECK_Y - 0.01), (0.024, NECK_Y - 0.01), (0.0, 0.212)])
        collar = win.polygon([(-0.036, NECK_Y - 0.008), (-0.002, 0.208), (-0.032, 0.2)])
        collar |= win.polygon([(0.036, NECK_Y - 0.008), (0.032, 0.2), (0.002, 0.208)])
        return cut & ~collar, collar
    rx, ry = (0.031, 0.019) if kind == "sweater" else (0.033, 0.024)
    cut, _, _ = win.ellipse((0.0, NECK_Y - 0.006), rx, ry)
    ring, _, _ = win.ellipse((0.0, NECK_Y - 0.006), rx + 0.006, ry + 0.006)
    return cut, ring & ~cut


def _top(cv: Canvas, body: Body, g: Garment, label: int) -> None:
    hem = TOP_HEMS[g.kind]
    outline = body.outline(grow=0.012, bottom=hem)
    if (win := cv.window(*_bbox(outline))) is None:
        return
    mask = win.polygon(outline)
    cut, band = _neckline(win, g.kind, g.sleeve)
    mask &= ~cut
    if g.sleeve == "sleeveless":
        for sign in (-1.0, 1.0):
            hole, _, _ = win.ellipse((sign * (body.shoulder + 0.022), 0.19), 0.046, ARMPIT_Y - 0.19 + 0.012)
            mask &= ~hole
    shade = 1.0 - 0.16 * (win.bx / (body.shoulder + 0.01)) ** 2
    if g.kind == "sweater":
        band = band | (win.by > hem - 0.02)
    if g.kind == "shirt":
        band = band | ((np.abs(win.bx) < 0.0035) & (win.by > 0.21))
    shade = np.where(band, shade * BAND_SHADE, shade)
    if g.kind == "shirt":
        buttons = np.zeros(win.shape, dtype=bool)
        for y in np.arange(0.235, hem - 0.02, 0.048):
            buttons |= win.ellipse((0.0, float(y)), 0.0045, 0.0045)[0]
        shade = np.where(buttons, 0.55 * shade + 0.35, shade)
    u, v = body.torso_uv(win.bx, win.by)
    cv.paint(win, mask, label, _fill(g), shade, PARTS["torso"], u, v)


def _sleeves(cv: Canvas, body: Body, g: Garment, label: int, grow: float) -> None:
    if g.sleeve in (None, "sleeveless"):
        return
    fill = _fill(g)
    cuffs = g.kind in ("shirt", "sweater", "jacket")
    for side, _ in SIDES:
        upper, fore, _ = body.arms[side]
        if g.sleeve == "short":
            _paint_tube(cv, upper, label, fill, grow=grow, flare=0.006, t1=0.5)
            continue
        _paint_tube(cv, upper, label, fill, grow=grow)
        _paint_tube(cv, fore, label, fill, grow=grow, flare=0.002, t1=0.94, band=(0.84, 0.94) if cuffs else None)


def _arms(cv: Canvas, body: Body, skin: Fill) -> None:
    for side, _ in SIDES:
        upper, fore, _ = body.arms[side]
        _paint_tube(cv, upper, L["arms"], skin)
        _paint_tube(cv, fore, L["arms"], skin)


def _hands(cv: Canvas, body: Body, skin: Fill) -> None:
    for side, _ in SIDES:
        _paint_tube(cv, body.arms[side][2], L["hands"], skin)


def _jacket(cv: Canvas, body: Body, g: Garment, label: int) -> None:
    outline = body.outline(grow=0.016, bottom=0.5)
    if (win := cv.window(*_bbox(outline))) is None:
        return
    opening = win.polygon([(-0.018, NECK_Y - 0.012), (0.018, NECK_Y - 0.012), (0.044, 0.29), (0.04, 0.52),
                           (-0.04, 0.52), (-0.044, 0.29)])
    lapels = win.polygon([(-0.02, NECK_Y - 0.008), (-0.058, 0.205), (-0.045, 0.29)])
    lapels |= win.polygon([(0.02, NECK_Y - 0.008), (0.045, 0.29), (0.058, 0.205)])
    shade = 1.0 - 0.16 * (win.bx / (body.shoulder + 0.02)) ** 2
    shade = np.where(lapels, shade * BAND_SHADE, shade)
    u, v = body.torso_uv(win.bx, win.by)
    cv.paint(win, win.polygon(outline) & ~opening, label, _fill(g), shade, PARTS["torso"], u, v)


def _head(cv: Canvas, body: Body, at: Attributes, skin: Fill, hair: Fill) -> None:
    (cx, cy), rx, ry = body.head_centre, body.head_rx, body.head_ry
    if at.hair_style == "long":
        for sign in (-1.0, 1.0):
            strand = Limb((sign * (rx - 0.006), 0.1), (sign * (rx + 0.014), 0.27), 0.015, 0.011, 0)
            _paint_tube(cv, strand, L["hair"], hair, part=False)
    if (win := cv.window(-rx - 0.02, rx + 0.02, cy - ry - 0.02, cy + ry + 0.01)) is None:
        return
    half = np.where(win.bx < 0, PARTS["head_right"], PARTS["head_left"])  # person's right = image left
    for sign in (-1.0, 1.0):  # ears
        ear, _, _ = win.ellipse((sign * rx * 0.97, cy + 0.006), 0.009, 0.015)
        cv.paint(win, ear, L["head"], skin, 0.85, half, 1.0, 0.5)
    face, nx, ny = win.ellipse((cx, cy), rx, ry)
    cv.paint(win, face, L["head"], skin, 1.0 - 0.12 * (nx * nx + ny * ny), half, np.abs(nx), 0.5 + 0.5 * ny)
    dark = Fill(np.array([0.12, 0.09, 0.08], dtype=np.float32))
    for sign in (-1.0, 1.0):
        eye, _, _ = win.ellipse((sign * 0.018, cy + 0.002), 0.0065, 0.0048)
        cv.paint(win, eye, L["head"], dark)
        brow, _, _ = win.ellipse((sign * 0.019, cy - 0.012), 0.011, 0.0026)
        cv.paint(win, brow, L["head"], hair, 0.8)
    nose, _, _ = win.ellipse((0.0, cy + 0.017), 0.005, 0.008)
    cv.paint(win, nose, L["head"], skin, 0.88)
    mouth, _, _ = win.ellipse((0.0, cy + 0.034), 0.012, 0.0038)
    lips = Fill(np.clip(skin.base * np.array([0.85, 0.55, 0.55], dtype=np.float32), 0.0, 1.0))
    cv.paint(win, mouth, L["head"], lips)
    # hair on the head: a cap above a hairline that dips at the temples
    grow, hairline_top, dip = {"buzz": (0.002, 0.036, 0.036), "short": (0.008, 0.032, 0.042),
                               "bob": (0.009, 0.03, 0.05), "long": (0.009, 0.03, 0.05),
                               "bun": (0.004, 0.033, 0.044)}[at.hair_style]
    cap, nx, ny = win.ellipse((cx, cy - 0.006), rx + grow, ry + grow)
    cap &= win.by < cy - hairline_top + dip * (win.bx / rx) ** 2
    cv.paint(win, cap, L["hair"], hair, 1.0 - 0.2 * (nx * nx + ny * ny))


def framing(at: Attributes) -> tuple[float, float]:
    """(scale, top): the image fraction per body unit, and the image fraction where body y = 0 (the head top) lies.

    v1 stands a full-body figure on a floor line (`scale` shrinks the person); v2 frames the upper body from
    above the hair down to V2_VIEW_BOTTOM, VITON-like (`scale` < 1 zooms out, showing more below the hips).
    """
    if at.world == "v1":
        scale = at.scale * (FEET_AT - TOP_MARGIN) / SOLE_Y
        return scale, FEET_AT - SOLE_Y * scale
    scale = at.scale / (V2_VIEW_BOTTOM + V2_VIEW_TOP)
    return scale, V2_VIEW_TOP * scale


def draw(at: Attributes, size: int, supersample: int) -> Canvas:
    """Paint `at` on a fresh canvas of `size` pixels per side (anti-aliased by `supersample`)."""
    scale, top = framing(at)  # image fraction per body unit; image fraction of the head top
    cv = Canvas(size, supersample, centre_x=0.5 + at.offset_x, top=top, scale=scale)
    body = Body(at)
    skin = Fill(_rgb(SKIN_TONES[at.skin]))
    hair = Fill(_rgb(HAIR_COLOURS[at.hair_colour]))
    _background(cv, at)
    _hair_behind(cv, body, at, hair)
    _legs_and_shoes(cv, body, at, skin)
    _torso_skin(cv, body, skin)
    if at.dress is not None:
        _lower(cv, body, at.dress, L["dress"])
        _top(cv, body, at.dress, L["dress"])
    else:
        _lower(cv, body, at.lower, L["lower_garment"])
        _top(cv, body, at.upper, L["upper_garment"])
    _arms(cv, body, skin)
    top_garment, top_label = (at.dress, L["dress"]) if at.dress is not None else (at.upper, L["upper_garment"])
    _sleeves(cv, body, top_garment, top_label, grow=0.007)
    if at.outerwear is not None:
        _jacket(cv, body, at.outerwear, L["outerwear"])
        _sleeves(cv, body, at.outerwear, L["outerwear"], grow=0.013)
    _hands(cv, body, skin)
    _head(cv, body, at, skin, hair)
    return cv
