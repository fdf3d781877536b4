"""The person's skeleton in body units, and the DensePose part numbering used by the synthetic world.

DensePose numbers 24 body-surface charts. Person's right is the image's left in this front view.
Of each front/back pair the front chart is used: torso 2, upper legs 9 (right) and 10 (left), lower
legs 13 and 14. The arm pairs split an arm into two halves rather than front and back; a whole
visible arm takes the first of its pair: upper arms 15 (left) and 16 (right), lower arms 19 and 20.
The head pair is the head's two sides: 23 for the person's right half (image left), 24 for the left.
Hands are 3 (right) and 4 (left); feet (shoes) 5 (left) and 6 (right).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ficekit.synthetic.canvas import Point
from ficekit.synthetic.world import Attributes

DENSEPOSE_PARTS: dict[str, int] = {
    "torso": 2,
    "hand_right": 3,
    "hand_left": 4,
    "foot_left": 5,
    "foot_right": 6,
    "upper_leg_right": 9,
    "upper_leg_left": 10,
    "lower_leg_right": 13,
    "lower_leg_left": 14,
    "upper_arm_left": 15,
    "upper_arm_right": 16,
    "lower_arm_left": 19,
    "lower_arm_right": 20,
    "head_right": 23,
    "head_left": 24,
}
SIDES: tuple[tuple[str, float], ...] = (("right", -1.0), ("left", 1.0))  # person's side, sign of its x

# Body-unit landmarks shared by the garments (y grows downward from the top of the head).
NECK_Y = 0.158  # where the neck meets the shoulders
ARMPIT_Y = 0.255
WAIST_Y = 0.34
HIP_Y = 0.43
CROTCH_Y = 0.49


@dataclass(frozen=True)
class Limb:
    """A tapered segment a->b: radius r0 at a, r1 at b, and its DensePose part."""

    a: Point
    b: Point
    r0: float
    r1: float
    part: int


def _step(p: Point, sign: float, degrees: float, length: float) -> Point:
    """Point `length` away from `p`, `degrees` outward (towards `sign`) from straight down."""
    rad = math.radians(degrees)
    return (p[0] + sign * length * math.sin(rad), p[1] + length * math.cos(rad))


class Body:
    """Landmarks, outlines and limbs of one person, all in body units."""

    def __init__(self, at: Attributes) -> None:
        w = at.body_width
        woman = at.presentation == "woman"
        self.shoulder = (0.082 if woman else 0.094) * w  # half widths
        self.waist = (0.061 if woman else 0.071) * w
        self.hip = (0.081 if woman else 0.075) * w
        self.head_centre: Point = (0.0, 0.076)
        self.head_rx = 0.046 if woman else 0.05
        self.head_ry = 0.062 if woman else 0.065
        self.neck_r = 0.02 if woman else 0.024
        arm_r = (0.023 if woman else 0.027) * math.sqrt(w)
        thigh_r = (0.043 if woman else 0.042) * math.sqrt(w)
        self.arm_r = arm_r
        self.arms: dict[str, tuple[Limb, Limb, Limb]] = {}  # side -> (upper arm, forearm, hand)
        self.legs: dict[str, tuple[Limb, Limb]] = {}  # side -> (upper leg, lower leg)
        self.ankles: dict[str, Point] = {}
        pose = at.pose
        for side, sign in SIDES:
            shoulder = (sign * (self.shoulder - 0.9 * arm_r), 0.2)
            up = getattr(pose, f"arm_{side}")
            elbow = _step(shoulder, sign, up, 0.155)
            fore = up + getattr(pose, f"elbow_{side}")
            wrist = _step(elbow, sign, fore, 0.135)
            hand_end = _step(wrist, sign, fore * 0.7, 0.05)
            self.arms[side] = (
                Limb(shoulder, elbow, arm_r, 0.82 * arm_r, DENSEPOSE_PARTS[f"upper_arm_{side}"]),
                Limb(elbow, wrist, 0.8 * arm_r, 0.64 * arm_r, DENSEPOSE_PARTS[f"lower_arm_{side}"]),
                Limb(wrist, hand_end, 0.68 * arm_r, 0.74 * arm_r, DENSEPOSE_PARTS[f"hand_{side}"]),
            )
            hip = (sign * (self.hip - thigh_r), 0.465)  # the thigh's outer edge is the hip line
            thigh = getattr(pose, f"leg_{side}")
            knee = _step(hip, sign, thigh, 0.205)
            ankle = _step(knee, sign, thigh + getattr(pose, f"knee_{side}"), 0.195)
            self.legs[side] = (
                Limb(hip, knee, thigh_r, 0.72 * thigh_r, DENSEPOSE_PARTS[f"upper_leg_{side}"]),
                Limb(knee, ankle, 0.7 * thigh_r, 0.46 * thigh_r, DENSEPOSE_PARTS[f"lower_leg_{side}"]),
            )
            self.ankles[side] = ankle

    def outline(self, grow: float = 0.0, bottom: float = CROTCH_Y) -> list[Point]:
        """The torso's outline from the neck down to `bottom`, widened by `grow` (garments sit outside the skin)."""
        g = grow
        ys = [NECK_Y - 0.002, NECK_Y + 0.01 - 0.3 * g, 0.19 - 0.2 * g, ARMPIT_Y, WAIST_Y, HIP_Y]
        xs = [0.03 + 0.3 * g, 0.6 * self.shoulder + g, self.shoulder + g, 0.96 * self.shoulder + g,
              self.waist + g, self.hip + g]
        side = [(x, y) for x, y in zip(xs, ys, strict=True) if y < bottom]
        side.append((float(np.interp(bottom, ys, xs)), bottom))
        return [(-x, y) for x, y in side] + [(x, y) for x, y in reversed(side)]

    def torso_uv(self, bx: np.ndarray, by: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """DensePose U (image left 0 -> right 1) and V (neck 0 -> crotch 1) over the torso."""
        return 0.5 + bx / (2.0 * (self.shoulder + 0.02)), (by - NECK_Y) / (CROTCH_Y - NECK_Y)
