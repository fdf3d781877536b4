"""Natural-language captions of a synthetic person: varied phrasings of the same attributes.

Captions name what is drawn (colours, garment kinds, patterns, sleeves, lengths, hair) with the words
people use ("tee", "jeans", "polka dot", "gray"), and add words the world does not depict (materials
such as cotton, silk, linen, denim, wool; style words such as casual, fitted, vintage) so that real
instructions tokenize into something the models have seen. Choices are drawn from a seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ficekit.synthetic.world import PALETTE, Attributes, Garment

COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "grey": ("grey", "gray"),
    "navy": ("navy", "navy blue"),
    "beige": ("beige",),
    "teal": ("teal",),
}
GARMENT_WORDS: dict[str, tuple[str, ...]] = {
    "tshirt": ("t-shirt", "tee", "t-shirt"),  # repeats weight the more common word
    "shirt": ("shirt", "button-up shirt", "collared shirt"),
    "sweater": ("sweater", "jumper", "pullover"),
    "tank_top": ("tank top", "tank", "sleeveless top"),
    "jacket": ("jacket", "open jacket"),
    "trousers": ("trousers", "pants", "jeans"),
    "shorts": ("shorts",),
    "skirt": ("skirt",),
    "dress": ("dress",),
}
PATTERN_WORDS: dict[str, tuple[str, ...]] = {  # adjectives; '' = unmentioned
    "plain": ("", "", "plain", "solid"),
    "stripes_h": ("striped", "horizontal-striped", "stripy"),
    "stripes_v": ("vertical-striped", "pinstripe", "striped"),
    "dots": ("polka dot", "polka-dot", "dotted", "spotted"),
    "checks": ("checked", "plaid", "check", "gingham"),
}
PATTERN_NOUNS: dict[str, tuple[str, ...]] = {
    "stripes_h": ("stripes", "horizontal stripes"),
    "stripes_v": ("vertical stripes", "stripes"),
    "dots": ("polka dots", "dots"),
    "checks": ("checks", "check"),
}
SLEEVE_WORDS: dict[str, tuple[str, ...]] = {
    "sleeveless": ("sleeveless",),
    "short": ("short-sleeve", "short-sleeved"),
    "long": ("long-sleeve", "long-sleeved"),
}
LENGTH_WORDS: dict[str, tuple[str, ...]] = {"mini": ("mini", "short"), "knee": ("knee-length",), "midi": ("midi", "mid-length")}
MATERIALS: dict[str, tuple[str, ...]] = {  # not depicted: words real instructions use
    "tshirt": ("cotton", "jersey", "linen", "organic cotton"),
    "shirt": ("cotton", "linen", "silk", "oxford", "flannel"),
    "sweater": ("wool", "cashmere", "knit", "cotton", "merino"),
    "tank_top": ("cotton", "jersey", "silk", "ribbed"),
    "jacket": ("denim", "leather", "wool", "cotton", "corduroy"),
    "trousers": ("cotton", "linen", "wool", "corduroy", "twill"),
    "shorts": ("denim", "cotton", "linen"),
    "skirt": ("denim", "silk", "cotton", "linen", "wool"),
    "dress": ("silk", "cotton", "linen", "chiffon", "jersey"),
}
STYLE_WORDS: tuple[str, ...] = ("casual", "classic", "relaxed", "fitted", "loose", "oversized", "vintage",
                                "elegant", "everyday", "lightweight", "slim-fit", "summer", "soft")
PERSON_WORDS: dict[str, tuple[str, ...]] = {
    "woman": ("woman", "young woman", "lady", "female model"),
    "man": ("man", "young man", "guy", "male model"),
}
HAIR_WORDS: dict[str, str] = {"buzz": "buzz-cut", "short": "short", "bob": "bob-cut", "long": "long", "bun": "tied-up"}
HAIR_COLOUR_WORDS: dict[str, str] = {"black": "black", "dark_brown": "dark brown", "brown": "brown",
                                     "blonde": "blonde", "auburn": "auburn", "grey": "grey"}
_JEANS_COLOURS = ("blue", "navy", "black", "grey", "white")
_PLURAL_KINDS = ("trousers", "shorts")


def colour_words(colour: str) -> tuple[str, ...]:
    """The words a caption may use for a palette colour."""
    return COLOUR_WORDS.get(colour, (colour,))


class _Writer:
    """Phrase builders sharing one random generator."""

    def __init__(self, at: Attributes, rng: np.random.Generator) -> None:
        self.at = at
        self.rng = rng

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def maybe(self, p: float, word: str) -> str:
        return word if self.rng.uniform() < p else ""

    def colour(self, name: str) -> str:
        return self.pick(colour_words(name))

    def noun(self, g: Garment) -> str:
        words = GARMENT_WORDS[g.kind]
        if g.kind == "trousers" and not (g.colour in _JEANS_COLOURS and g.pattern == "plain"):
            words = words[:2]  # "jeans" only where plain denim colours make it plausible
        noun = self.pick(words)
        if g.kind == "tshirt" and g.sleeve == "long" and noun == "tee":
            noun = "long-sleeve tee"
        return noun

    def visible(self) -> list[Garment]:
        """The garments the picture shows: all in v1; in v2's upper-body framing not the trousers, shorts or skirt."""
        garments = self.at.garments()
        return [g for slot, g in garments.items() if self.at.world == "v1" or slot != "lower"]

    def details(self, g: Garment, noun: str = "") -> list[str]:
        """Sleeve and length adjectives worth saying for this garment (and not already in `noun`); v2 shows no
        dress length."""
        out = []
        if g.sleeve is not None and g.kind not in ("tank_top", "sweater", "jacket") and "sleeve" not in noun:
            out.append(self.pick(SLEEVE_WORDS[g.sleeve]))
        if g.length is not None and self.at.world == "v1":
            out.append(self.pick(LENGTH_WORDS[g.length]))
        return out

    def material(self, g: Garment, noun: str) -> str:
        return "" if noun == "jeans" else self.pick(MATERIALS[g.kind])

    def garment(self, g: Garment, article: bool = True, forms: int = 4) -> str:
        """One garment phrase in one of `forms` word orders (3 leaves out "... in red")."""
        noun = self.noun(g)
        form = int(self.rng.integers(forms))
        pattern = self.pick(PATTERN_WORDS[g.pattern])
        extras = self.details(g, noun) + [self.maybe(0.35, self.material(g, noun))]
        if form == 1 and g.pattern != "plain":  # "red shirt with white stripes"
            text = _join(self.colour(g.colour), *extras, noun, "with", self.colour(g.secondary),
                         self.pick(PATTERN_NOUNS[g.pattern]))
        elif form == 2 and g.pattern != "plain":  # "red and white striped shirt"
            text = _join(self.colour(g.colour), "and", self.colour(g.secondary), pattern, *extras, noun)
        elif form == 3:  # "striped cotton shirt in red" (last, so that `forms=3` leaves it out)
            text = _join(pattern, *extras, noun, "in", self.colour(g.colour))
        else:  # "red striped short-sleeve shirt"
            text = _join(self.colour(g.colour), pattern, *extras, noun)
        return _article(text, g) if article else text

    def outfit(self) -> str:
        at = self.at
        if at.world != "v1":  # upper body only: the top or dress, and any jacket over it
            top = self.garment(at.dress or at.upper, forms=3 if at.outerwear else 4)  # type: ignore[arg-type]
            return top if at.outerwear is None else f"{self.garment(at.outerwear, forms=3)} over {top}"
        if at.outerwear is None:
            if at.dress is not None:
                return self.garment(at.dress)
            return f"{self.garment(at.upper, forms=3)} and {self.garment(at.lower)}"
        jacket = self.garment(at.outerwear, forms=3)
        if at.dress is not None:
            return f"{self.garment(at.dress, forms=3)} under {jacket}"
        return f"{jacket} over {self.garment(at.upper, forms=3)}, with {self.garment(at.lower)}"

    def person(self) -> str:
        return _article(self.pick(PERSON_WORDS[self.at.presentation]))

    def main_garment(self) -> Garment:
        garments = self.visible()
        return garments[int(self.rng.integers(len(garments)))]


def _join(*words: str) -> str:
    return " ".join(w for w in words if w)


def _article(text: str, g: Garment | None = None) -> str:
    """Prefix 'a'/'an', except for garments that are plural nouns (trousers, jeans, shorts)."""
    if g is not None and g.kind in _PLURAL_KINDS:
        return text
    return ("an " if text[0] in "aeiou" else "a ") + text


def _t_outfit(w: _Writer) -> str:
    return w.outfit()


def _t_person_in(w: _Writer) -> str:
    return f"{w.person()} {w.pick(('in', 'wearing', 'dressed in'))} {w.outfit()}"


def _t_single(w: _Writer) -> str:
    g = w.main_garment()
    return w.garment(g, article=False)


def _t_photo(w: _Writer) -> str:
    if w.at.world != "v1":  # no shoes in the upper-body framing
        return f"{w.pick(('a photo of', 'upper-body shot of', 'studio photo of'))} {w.person()} wearing {w.outfit()}"
    shoes = f"{w.colour(w.at.shoes)} {w.pick(('shoes', 'sneakers', 'trainers'))}"
    return f"{w.pick(('a photo of', 'full-body shot of', 'studio photo of'))} {w.person()} wearing {w.outfit()} and {shoes}"


def _t_listing(w: _Writer) -> str:
    g = w.main_garment()
    parts = [_join(w.pick(STYLE_WORDS), w.noun(g)), w.colour(g.colour)]
    if g.pattern != "plain":
        parts.append(f"{w.pick(PATTERN_NOUNS[g.pattern])} in {w.colour(g.secondary)}")
    parts += w.details(g, parts[0])
    return ", ".join(parts)


def _t_hair(w: _Writer) -> str:
    at = w.at
    hair = f"{HAIR_WORDS[at.hair_style]} {HAIR_COLOUR_WORDS[at.hair_colour]} hair"
    return f"{w.person()} with {hair} {w.pick(('in', 'wearing'))} {w.outfit()}"


def _t_style(w: _Writer) -> str:
    g = w.main_garment()
    return f"{w.pick(STYLE_WORDS)} look: {w.garment(g)}"


def _t_short(w: _Writer) -> str:
    return ", ".join(_join(w.colour(g.colour), w.noun(g)) for g in w.visible())


TEMPLATES: tuple[Callable[[_Writer], str], ...] = (
    _t_outfit, _t_person_in, _t_single, _t_photo, _t_listing, _t_hair, _t_style, _t_short,
)


def make_captions(at: Attributes, seed: int, n: int = 6) -> list[str]:
    """`n` captions of `at` from distinct templates (at most len(TEMPLATES)), deterministic in `seed`."""
    if not 1 <= n <= len(TEMPLATES):
        raise ValueError(f"n: expected 1..{len(TEMPLATES)} captions, got {n}")
    rng = np.random.default_rng([int(seed), 1])
    writer = _Writer(at, rng)
    order = rng.permutation(len(TEMPLATES))[:n]
    return [" ".join(TEMPLATES[i](writer).split()) for i in sorted(order)]


# ---------------------------------------------------------------------------------------------------
# Hard negatives: caption pairs that differ in one attribute of the visible top.

CONTRAST_ATTRIBUTES: tuple[str, ...] = ("colour", "pattern", "sleeve")
# One adjective set per pattern with no word shared between patterns, so a pair always differs.
CONTRAST_PATTERN_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid"),
    "stripes_h": ("horizontal-striped", "horizontally striped"),
    "stripes_v": ("vertical-striped", "pinstripe"),
    "dots": ("polka dot", "dotted", "spotted"),
    "checks": ("checked", "plaid", "gingham"),
}
CONTRAST_TEMPLATES: tuple[str, ...] = ("{}", "a person wearing {}", "a photo of a person in {}")


def visible_top(at: Attributes) -> Garment:
    """The garment that covers the torso in front: the jacket when worn, else the dress or the top."""
    return at.outerwear or at.dress or at.upper  # type: ignore[return-value]


def contrast_captions(at: Attributes, rng: np.random.Generator) -> tuple[str, str, str]:
    """(positive, negative, attribute): two captions of the person's visible top that differ only in its
    colour, pattern or sleeve (`attribute`, drawn at random), e.g. "a red striped long-sleeve shirt" and
    "a red polka dot long-sleeve shirt". A loss that must tell them apart teaches the named attribute, which
    in-batch negatives (differing in many words at once) do not isolate."""
    g = visible_top(at)
    attribute = CONTRAST_ATTRIBUTES[int(rng.integers(len(CONTRAST_ATTRIBUTES)))]
    colour, pattern, sleeve = g.colour, g.pattern, g.sleeve or "long"
    if attribute == "colour":
        others = [c for c in PALETTE if c not in (g.colour, g.secondary)]
        changed = {"colour": others[int(rng.integers(len(others)))]}
    elif attribute == "pattern":
        others = [p for p in CONTRAST_PATTERN_WORDS if p != g.pattern]
        changed = {"pattern": others[int(rng.integers(len(others)))]}
    else:
        others = [s for s in SLEEVE_WORDS if s != sleeve]
        changed = {"sleeve": others[int(rng.integers(len(others)))]}
    template = CONTRAST_TEMPLATES[int(rng.integers(len(CONTRAST_TEMPLATES)))]
    noun = GARMENT_WORDS[g.kind][0]
    wording = int(rng.integers(6))  # which adjective of a pattern; the same draw for both, so only the change differs

    def phrase(colour: str, pattern: str, sleeve: str) -> str:
        words = CONTRAST_PATTERN_WORDS[pattern]
        text = _join(colour_words(colour)[0], words[wording % len(words)], SLEEVE_WORDS[sleeve][0], noun)
        return template.format(_article(text))

    positive = phrase(colour, pattern, sleeve)
    negative = phrase(changed.get("colour", colour), changed.get("pattern", pattern), changed.get("sleeve", sleeve))
    return positive, negative, attribute
