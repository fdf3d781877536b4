"""A procedural fashion world with known labels: people in garments, drawn with parsing and DensePose maps.

    from ficekit.synthetic import render, render_attributes
    sample = render(7, size=128)                 # image, parsing, densepose (I, U, V), attributes, captions
    edited = sample.attributes.with_garment("upper", colour="red", pattern="stripes_h", secondary="white")
    again = render(7, size=128, attributes=edited)  # same person; only the top's pixels change
    closer = render(7, size=64, world="v2")      # world v2: upper-body framing, tops about half the frame wide

World versions (WORLD_VERSIONS): 'v1', the default, draws small full-body figures (the first demo bundle was
trained on it, so it stays pixel-identical); 'v2' frames the upper body like VITON so garments carry patterns.

See world.py for the vocabulary, body.py for the DensePose part numbering, render.py for the CLI.
"""

from ficekit.synthetic.body import DENSEPOSE_PARTS
from ficekit.synthetic.captions import GARMENT_WORDS, make_captions
from ficekit.synthetic.render import DensePoseMaps, Sample, colourise_parsing, colourise_parts, render
from ficekit.synthetic.world import (
    HAIR_COLOURS,
    HAIR_STYLES,
    LENGTHS,
    LOWER_KINDS,
    OUTERWEAR_KINDS,
    PALETTE,
    PARSING_LABELS,
    PATTERNS,
    SKIN_TONES,
    SLEEVES,
    SLEEVES_BY_KIND,
    SLOT_LABELS,
    UPPER_KINDS,
    WORLD_VERSIONS,
    Attributes,
    Background,
    Garment,
    Pose,
    render_attributes,
)

__all__ = [
    "DENSEPOSE_PARTS",
    "GARMENT_WORDS",
    "HAIR_COLOURS",
    "HAIR_STYLES",
    "LENGTHS",
    "LOWER_KINDS",
    "OUTERWEAR_KINDS",
    "PALETTE",
    "PARSING_LABELS",
    "PATTERNS",
    "SKIN_TONES",
    "SLEEVES",
    "SLEEVES_BY_KIND",
    "SLOT_LABELS",
    "UPPER_KINDS",
    "WORLD_VERSIONS",
    "Attributes",
    "Background",
    "DensePoseMaps",
    "Garment",
    "Pose",
    "Sample",
    "colourise_parsing",
    "colourise_parts",
    "make_captions",
    "render",
    "render_attributes",
]
