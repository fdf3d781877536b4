"""Photo -> W+ (+ a tuned generator copy): FICE's e4e encoder, W+ optimisation (projection), pivotal tuning (PTI).

    inv = invert(photos, G, encoder, method="pti", steps=100)   # photos [N,3,R,R] in [0,1]
    images = synthesize_01(inv.generator, inv.ws)                # edit W+ in inv.generator

The caller's generator is never modified; pti returns a tuned deep copy (save_tuned_generator writes it).
"""

from .invert import (
    DEFAULT_STEPS,
    INVERSION_METHODS,
    PIVOTS,
    Inversion,
    check_inversion_args,
    invert,
    save_tuned_generator,
)
from .losses import ReconstructionLoss

__all__ = [
    "DEFAULT_STEPS",
    "INVERSION_METHODS",
    "PIVOTS",
    "Inversion",
    "ReconstructionLoss",
    "check_inversion_args",
    "invert",
    "save_tuned_generator",
]
