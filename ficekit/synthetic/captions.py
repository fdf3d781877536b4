"""Natural-language captions of a synthetic person: varied phrasings of the same attributes.

Captions name what is drawn (colours, garment kinds, patterns, sleeves, lengths, hair) with the words
people use ("tee", "jeans", "polka dot", "gray"), and add words the world does not depict (materials
such as cotton, silk, linen, denim, wool; style words such as casual, fitted, vintage) so that real
instructions tokenize into something the models have seen. Choices are drawn from a seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ficekit.synthetic.world import Attributes, Garment

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

    def details(self, g: Garment, noun: str = "") -> list[str]:
        """Sleeve and length adjectives worth saying for this garment (and not already in `noun`)."""
        out = []
        if g.sleeve is not None and g.kind not in ("tank_top", "sweater", "jacket") and "sleeve" not in noun:
            out.append(self.pick(SLEEVE_WORDS[g.sleeve]))
        if g.length is not None:
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
        garments = list(self.at.garments().values())
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
    return ", ".join(_join(w.colour(g.colour), w.noun(g)) for g in w.at.garments().values())


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
