"""Instruction parsing (garment category and attributes) and the CLIP zero-shot category fallback."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ficekit.instruction import (
    CATEGORY_PROMPTS,
    COLORS,
    GARMENT_CATEGORIES,
    GARMENT_IMPLIES,
    GARMENTS,
    LENGTH_WORDS,
    LENGTHS,
    MATERIALS,
    PATTERNS,
    SLEEVE_WORDS,
    SLEEVES,
    STOP_WORDS,
    Term,
    category_scores,
    classify_category,
    normalize_text,
    parse_instruction,
    scan_instruction,
)

# text -> (category, garment, sleeve, length, colors, patterns, materials)
CASES = [
    ("striped cotton shirt", ("upper", "shirt", None, None, [], ["striped"], ["cotton"])),
    (
        "long sleeve silk crepe de chine shirt featuring graphic pattern printed in tones of blue",
        ("upper", "shirt", "long", None, ["blue"], ["graphic", "print"], ["silk", "crepe de chine"]),
    ),
    ("red polka dot dress", ("full", "dress", None, None, ["red"], ["polka dot"], [])),
    ("blue jeans", ("lower", "jeans", None, "long", ["blue"], [], [])),
    ("a leather jacket", ("outerwear", "jacket", "long", None, [], [], ["leather"])),
    ("make it look nicer", (None, None, None, None, [], [], [])),
    ("Short-Sleeved T-Shirts in LIGHT BLUE", ("upper", "t-shirt", "short", None, ["light blue"], [], [])),
    ("a tshirt", ("upper", "t-shirt", "short", None, [], [], [])),
    ("a plain white tee", ("upper", "t-shirt", "short", None, ["white"], ["plain"], [])),
    ("short sleeve blouse", ("upper", "blouse", "short", None, [], [], [])),
    ("long-sleeved polo shirt", ("upper", "polo", "long", None, [], [], [])),
    ("grey hoodies", ("upper", "hoodie", "long", None, ["grey"], [], [])),
    ("gray wool jumper", ("upper", "sweater", "long", None, ["grey"], [], ["wool"])),
    ("sleeveless top with vertical stripes", ("upper", "top", "sleeveless", None, [], ["vertical stripes"], [])),
    ("black tank top", ("upper", "tank top", "sleeveless", None, ["black"], [], [])),
    ("long sleeves tank top", ("upper", "tank top", "long", None, [], [], [])),
    ("navy blue knee-length skirt", ("lower", "skirt", None, "knee", ["navy blue"], [], [])),
    ("a denim mini skirt", ("lower", "skirt", None, "mini", [], [], ["denim"])),
    ("checkered miniskirt", ("lower", "skirt", None, "mini", [], ["checked"], [])),
    ("khaki shorts", ("lower", "shorts", None, "short", ["khaki"], [], [])),
    ("wide leg trousers", ("lower", "trousers", None, "long", [], [], [])),
    ("black leggings", ("lower", "leggings", None, "long", ["black"], [], [])),
    ("pants with horizontal stripes", ("lower", "trousers", None, "long", [], ["horizontal stripes"], [])),
    ("long dress", ("full", "dress", None, "long", [], [], [])),
    ("long sleeve dress", ("full", "dress", "long", None, [], [], [])),
    ("Long-sleeved floral maxi dresses", ("full", "dress", "long", "maxi", [], ["floral"], [])),
    ("a green silk evening gown", ("full", "gown", None, "maxi", ["green"], [], ["silk"])),
    ("denim overalls", ("full", "overall", None, None, [], [], ["denim"])),
    ("plaid wool coat", ("outerwear", "coat", "long", None, [], ["plaid"], ["wool"])),
    ("long trench coat", ("outerwear", "coat", "long", "long", [], [], [])),
    ("sleeveless puffer vest", ("outerwear", "vest", "sleeveless", None, [], [], [])),
    ("camel blazer", ("outerwear", "blazer", "long", None, ["camel"], [], [])),
    ("Crêpe blouse", ("upper", "blouse", None, None, [], [], ["crepe"])),
    ("dress shirt", ("upper", "shirt", None, None, [], [], [])),
    ("shirt dress", ("full", "dress", None, None, [], [], [])),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_parse_table(text: str, expected: tuple) -> None:
    category, garment, sleeve, length, colors, patterns, materials = expected
    got = parse_instruction(text)
    assert got.text == text
    assert (got.category, got.garment) == (category, garment)
    a = got.attributes
    assert (a.sleeve, a.length) == (sleeve, length)
    assert a.colors == colors
    assert a.patterns == patterns
    assert a.materials == materials


def test_first_garment_decides_and_all_are_listed() -> None:
    got = parse_instruction("white shirts tucked into blue jeans, with a leather jacket")
    assert got.garment == "shirt" and got.category == "upper"
    assert got.garments == ["shirt", "jeans", "jacket"]
    assert got.attributes.colors == ["white", "blue"]
    assert got.attributes.length is None  # implied lengths come from the first garment only ('shirt': none)


def test_dressed_is_not_a_dress() -> None:
    assert parse_instruction("dressed in red").category is None


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text(text: str) -> None:
    with pytest.raises(ValueError, match="instruction text is empty"):
        parse_instruction(text)


def test_non_string_text() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_instruction(None)  # type: ignore[arg-type]


def test_explicit_category_overrides() -> None:
    got = parse_instruction("red polka dot dress", category="upper")
    assert got.category == "upper" and got.garment == "dress"
    assert parse_instruction("make it red", category="lower").category == "lower"


def test_unknown_category_lists_the_categories() -> None:
    with pytest.raises(ValueError, match="unknown garment category 'shoes'") as e:
        parse_instruction("red shirt", category="shoes")
    for c in GARMENT_CATEGORIES:
        assert c in str(e.value)


def test_normalize_text() -> None:
    assert normalize_text("  Crêpe-de-Chine T-SHIRT!! ") == "crepe de chine t shirt"
    assert normalize_text("3/4 sleeve") == "3 4 sleeve"


# -- words the parser did not use ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ignored"),
    [
        ("ein rotes T-Shirt mit Streifen", ["ein", "rotes", "mit", "streifen"]),
        ("make it a red shirt with white stripes, please", []),
        ("wide leg trousers", ["wide", "leg"]),
        ("sleeveless puffer vest, puffer style", ["puffer"]),  # once each, stop words ('style') never
        ("change the colour to green", ["change"]),
        ("shirt without stripes", ["without"]),  # the one-text parser does not read negation: say so
        ("long sleeve silk crepe de chine shirt featuring graphic pattern printed in tones of blue",
         ["featuring", "tones"]),
        ("Short-Sleeved T-Shirts in LIGHT BLUE", []),
    ],
)
def test_ignored_words(text: str, ignored: list[str]) -> None:
    assert parse_instruction(text).ignored_words == ignored


def test_every_case_reports_only_words_outside_the_vocabulary() -> None:
    for text, _ in CASES:
        got = parse_instruction(text)
        assert not set(got.ignored_words) & STOP_WORDS, text
        assert set(got.ignored_words) <= set(normalize_text(text).split()), text
    assert parse_instruction("make it look nicer").ignored_words == ["nicer"]


# -- which colours are the pattern's ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "colors", "pattern_colors"),
    [
        ("red t-shirt with white stripes", ["red", "white"], ["white"]),
        ("add white stripes", ["white"], ["white"]),
        ("red and white striped shirt", ["red", "white"], ["white"]),  # red shirt, white stripes
        ("red striped shirt", ["red"], []),
        ("red polka dot dress", ["red"], []),  # adjective: the dress is red
        ("dress with red polka dot", ["red"], ["red"]),
        ("dress with navy blue and white stripes", ["navy blue", "white"], ["navy blue", "white"]),
        ("dress with stripes in navy blue and white", ["navy blue", "white"], ["navy blue", "white"]),
        ("make the stripes blue", ["blue"], ["blue"]),
        ("white t-shirt with stripes", ["white"], []),
        ("shirt with a white graphic print", ["white"], ["white"]),
        ("a plain white tee", ["white"], []),
        ("striped cotton shirt in red", ["red"], []),
    ],
)
def test_pattern_colors(text: str, colors: list[str], pattern_colors: list[str]) -> None:
    a = parse_instruction(text).attributes
    assert (a.colors, a.pattern_colors) == (colors, pattern_colors)


def test_scan_gives_each_term_its_words() -> None:
    scan = scan_instruction("Long-sleeved light blue T-shirt with white stripes")
    assert scan.words == ("long", "sleeved", "light", "blue", "t", "shirt", "with", "white", "stripes")
    assert scan.terms == (
        Term("sleeve", "long", 0, 1, "long sleeved"),
        Term("color", "light blue", 2, 3, "light blue"),
        Term("garment", "t-shirt", 4, 5, "t shirt"),
        Term("color", "white", 7, 7, "white"),
        Term("pattern", "striped", 8, 8, "stripes"),
    )
    assert scan.pattern_colors == (scan.terms[3],)
    assert scan.covered() == {0, 1, 2, 3, 4, 5, 7, 8}


def test_reversed_sleeve_phrases_are_sleeves_not_lengths() -> None:
    got = parse_instruction("make the sleeves long")
    assert (got.attributes.sleeve, got.attributes.length) == ("long", None)


# -- the vocabulary as data --------------------------------------------------------------------


def test_garment_table_is_consistent() -> None:
    for canonical, (category, _) in GARMENTS.items():
        assert category in GARMENT_CATEGORIES, canonical
    for canonical, implied in GARMENT_IMPLIES.items():
        assert canonical in GARMENTS
        assert set(implied) <= {"sleeve", "length"}
        assert implied.get("sleeve", "short") in SLEEVES and implied.get("length", "long") in LENGTHS
    assert set(SLEEVE_WORDS) == set(SLEEVES) and set(LENGTH_WORDS) == set(LENGTHS)


@pytest.mark.parametrize(
    "table", [{k: v[1] for k, v in GARMENTS.items()}, SLEEVE_WORDS, LENGTH_WORDS, COLORS, PATTERNS, MATERIALS]
)
def test_no_phrase_has_two_meanings(table: dict) -> None:
    seen: dict[str, str] = {}
    for canonical, synonyms in table.items():
        for phrase in (canonical, *synonyms):
            p = normalize_text(phrase)
            assert seen.setdefault(p, canonical) == canonical, f"{phrase!r}: {seen[p]!r} and {canonical!r}"


@pytest.mark.parametrize("canonical", list(GARMENTS))
def test_every_garment_phrase_and_its_plural_parse(canonical: str) -> None:
    for phrase in (canonical, *GARMENTS[canonical][1]):
        for text in (f"a {phrase}", f"two {phrase}s", f"the {phrase.upper()} please"):
            got = parse_instruction(text)
            assert got.garment == canonical, text
            assert got.category == GARMENTS[canonical][0], text


@pytest.mark.parametrize(("field", "table"), [("patterns", PATTERNS), ("materials", MATERIALS)])
def test_every_pattern_and_material_phrase_parses(field: str, table: dict) -> None:
    for canonical, synonyms in table.items():
        for phrase in (canonical, *synonyms):
            got = getattr(parse_instruction(f"{phrase} shirt").attributes, field)
            assert got == [canonical], phrase


def test_every_sleeve_and_length_phrase_parses() -> None:
    for sleeve, phrases in SLEEVE_WORDS.items():
        for phrase in phrases:
            assert parse_instruction(f"{phrase} blouse").attributes.sleeve == sleeve, phrase
    for length, phrases in LENGTH_WORDS.items():
        for phrase in (length, *phrases):
            assert parse_instruction(f"{phrase} skirt").attributes.length == length, phrase


def test_every_color_parses_with_and_without_modifier() -> None:
    for canonical, synonyms in COLORS.items():
        for phrase in (canonical, *synonyms):
            assert parse_instruction(f"{phrase} shirt").attributes.colors == [canonical], phrase
            assert parse_instruction(f"dark {phrase} shirt").attributes.colors == [f"dark {canonical}"], phrase


# -- CLIP zero-shot fallback -----------------------------------------------------------------------


class StubClip:
    """ClipGuide stand-in: text features from a table, image features given per call (unit length)."""

    def __init__(self, text_features: dict[str, torch.Tensor], image_features: torch.Tensor | None = None) -> None:
        self.text_features = text_features
        self.image_features = image_features
        self.image_calls = 0

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(torch.stack([self.text_features[t] for t in texts]), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.image_calls += 1
        assert self.image_features is not None and images.shape[0] == self.image_features.shape[0]
        return F.normalize(self.image_features, dim=-1)


DIM = 16


def _axis(i: int, scale: float = 1.0) -> torch.Tensor:
    v = torch.zeros(DIM)
    v[i] = scale
    return v


def _prompt_features() -> dict[str, torch.Tensor]:
    """Category c's prompts point along axis c (plus a small prompt-specific component)."""
    out = {}
    for c, category in enumerate(GARMENT_CATEGORIES):
        for j, prompt in enumerate(CATEGORY_PROMPTS[category]):
            out[prompt] = _axis(c) + _axis(8 + j, 0.1)
    return out


def _text(features: dict[str, torch.Tensor], text: str, vector: torch.Tensor) -> dict[str, torch.Tensor]:
    return {**features, text: vector}


def test_prompts_cover_every_category() -> None:
    assert set(CATEGORY_PROMPTS) == set(GARMENT_CATEGORIES)
    assert all(len(p) >= 2 for p in CATEGORY_PROMPTS.values())


@pytest.mark.parametrize("target", GARMENT_CATEGORIES)
def test_text_alone_picks_the_closest_category(target: str) -> None:
    c = GARMENT_CATEGORIES.index(target)
    text = "something to wear"
    clip = StubClip(_text(_prompt_features(), text, _axis(c) + _axis(5, 0.5)))
    assert classify_category(clip, None, text) == [target]


def test_image_decides_when_the_text_is_neutral() -> None:
    text = "make it red"
    neutral = sum(_axis(c) for c in range(4)) + _axis(6)  # equally close to every category
    images = torch.rand(2, 3, 8, 8)
    image_features = torch.stack([_axis(GARMENT_CATEGORIES.index("full")), _axis(GARMENT_CATEGORIES.index("lower"))])
    clip = StubClip(_text(_prompt_features(), text, neutral), image_features)
    assert classify_category(clip, images, text) == ["full", "lower"]
    assert clip.image_calls == 1


def test_text_outweighs_the_image() -> None:
    text = "something warm to put on"
    clip = StubClip(
        _text(_prompt_features(), text, _axis(GARMENT_CATEGORIES.index("outerwear"))),
        torch.stack([_axis(GARMENT_CATEGORIES.index("upper"))]),
    )
    images = torch.rand(1, 3, 8, 8)
    assert classify_category(clip, images, text) == ["outerwear"]
    # A heavy image weight flips it: the image term is really combined.
    assert classify_category(clip, images, text, image_weight=3.0) == ["upper"]


def test_image_weight_zero_ignores_images_but_returns_one_per_image() -> None:
    text = "anything"
    clip = StubClip(_text(_prompt_features(), text, _axis(GARMENT_CATEGORIES.index("lower"))), torch.eye(DIM)[:3])
    assert classify_category(clip, torch.rand(3, 3, 8, 8), text, image_weight=0.0) == ["lower"] * 3
    assert clip.image_calls == 0


def test_scores_are_log_probabilities_over_the_given_categories() -> None:
    text = "anything"
    clip = StubClip(_text(_prompt_features(), text, _axis(0) + _axis(1)))
    scores = category_scores(clip, None, text, categories=("upper", "lower"))
    assert scores.shape == (1, 2)
    torch.testing.assert_close(scores.exp().sum(-1), torch.ones(1))
    torch.testing.assert_close(scores[0, 0], scores[0, 1])  # equally close to both
    assert classify_category(clip, None, text, categories=("full", "lower")) == ["lower"]


def test_classify_errors() -> None:
    clip = StubClip(_text(_prompt_features(), "x", _axis(0)))
    with pytest.raises(ValueError, match="at least one"):
        classify_category(clip, None, "x", categories=())
    with pytest.raises(ValueError, match="no prompts for categories \\['shoes'\\]"):
        classify_category(clip, None, "x", categories=("upper", "shoes"))
    with pytest.raises(ValueError, match="image_weight"):
        classify_category(clip, None, "x", image_weight=-1.0)
    with pytest.raises(ValueError, match="empty"):
        classify_category(clip, None, "  ")
    with pytest.raises(ValueError, match="images_01"):
        classify_category(clip, torch.rand(3, 8, 8), "x")
