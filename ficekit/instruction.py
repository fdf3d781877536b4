"""Instruction parsing: text -> garment category and attributes, with a CLIP zero-shot fallback.

`parse_instruction` reads the garment word, sleeve and length words, colours, patterns and materials from
a free-text edit instruction ("long sleeve silk shirt with blue stripes") using the vocabularies below
(data, not code). Matching is case-insensitive, accent-insensitive, treats hyphens and other punctuation
as spaces ("T-Shirt" = "t shirt"), tolerates plurals of garment, pattern and material words, and tries
multi-word phrases before the single words inside them ("tank top" before "top", "dress shirt" before
"dress"). `scan_instruction` says where each phrase is (word positions), from which `parse_instruction` also
tells which colours belong to a pattern ("white" in "red shirt with white stripes") and which words it did not
use (`Instruction.ignored_words`: never a silent drop). `classify_category` guesses the category with CLIP when
the text names no garment. Follow-up instructions as changes to a garment state: ficekit.garment_state.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ficekit.shapes import check_shape

if TYPE_CHECKING:
    from ficekit.perception.clip import ClipGuide

GARMENT_CATEGORIES: tuple[str, ...] = ("upper", "lower", "full", "outerwear")
SLEEVES: tuple[str, ...] = ("sleeveless", "short", "long")
LENGTHS: tuple[str, ...] = ("mini", "short", "knee", "midi", "long", "maxi")

# ---------------------------------------------------------------------------------------------------
# Vocabulary. Each table maps a canonical word to the phrases that mean it (the canonical word itself always
# counts). Phrases are written normalised: lower case, words separated by single spaces, no punctuation.

# canonical garment -> (category, synonyms)
GARMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    # upper
    "shirt": ("upper", ("dress shirt", "button down", "button up", "flannel shirt")),
    "t-shirt": ("upper", ("t shirt", "tshirt", "tee", "tee shirt")),
    "blouse": ("upper", ()),
    "top": ("upper", ("crop top", "halter top", "tunic")),
    "sweater": ("upper", ("jumper", "pullover", "sweatshirt", "turtleneck", "knitwear")),
    "hoodie": ("upper", ("hoody", "hooded sweatshirt")),
    "tank top": ("upper", ("tank", "camisole", "cami", "singlet")),
    "polo": ("upper", ("polo shirt",)),
    # outerwear
    "jacket": ("outerwear", ("bomber", "windbreaker", "anorak")),
    "coat": ("outerwear", ("overcoat", "trench coat", "trenchcoat", "raincoat", "peacoat", "pea coat")),
    "blazer": ("outerwear", ("sport coat", "suit jacket")),
    "cardigan": ("outerwear", ()),
    "parka": ("outerwear", ()),
    "vest": ("outerwear", ("waistcoat", "gilet")),
    # lower
    "trousers": ("lower", ("trouser", "pants", "slacks", "chinos", "joggers", "sweatpants")),
    "jeans": ("lower", ()),
    "shorts": ("lower", ()),
    "skirt": ("lower", ("miniskirt", "maxiskirt")),
    "leggings": ("lower", ("jeggings", "tights")),
    # full
    "dress": (
        "full",
        ("minidress", "maxidress", "sundress", "shirt dress", "shirtdress", "t shirt dress", "tshirt dress",
         "sweater dress", "slip dress"),
    ),
    "gown": ("full", ("evening gown", "ball gown")),
    "jumpsuit": ("full", ("romper", "playsuit")),
    "overall": ("full", ("dungarees",)),
}

# Attributes a garment word implies when the text gives none (an explicit sleeve/length word wins).
GARMENT_IMPLIES: dict[str, dict[str, str]] = {
    "t-shirt": {"sleeve": "short"},
    "polo": {"sleeve": "short"},
    "tank top": {"sleeve": "sleeveless"},
    "sweater": {"sleeve": "long"},
    "hoodie": {"sleeve": "long"},
    "jacket": {"sleeve": "long"},
    "coat": {"sleeve": "long"},
    "blazer": {"sleeve": "long"},
    "cardigan": {"sleeve": "long"},
    "parka": {"sleeve": "long"},
    "vest": {"sleeve": "sleeveless"},
    "trousers": {"length": "long"},
    "jeans": {"length": "long"},
    "leggings": {"length": "long"},
    "shorts": {"length": "short"},
    "gown": {"length": "maxi"},
}


def _sleeve_phrases(*prefixes: str) -> tuple[str, ...]:
    return tuple(f"{p} {s}" for p in prefixes for s in ("sleeve", "sleeves", "sleeved"))


# Sleeve words (matched before length words, so the 'long' of 'long sleeve' is not a length). Unlike the other
# tables, the canonical word alone does not count here: 'long' alone is a length, not a sleeve.
SLEEVE_WORDS: dict[str, tuple[str, ...]] = {
    "sleeveless": (
        "sleeveless", "no sleeves", "without sleeves", "strapless", "spaghetti strap", "spaghetti straps", "halter",
        "halterneck", "halter neck", "one shoulder", "remove the sleeves", "remove sleeves", "cut off the sleeves",
    ),
    "short": (*_sleeve_phrases("short", "half", "cap", "elbow", "elbow length"), "sleeves short", "sleeve short"),
    "long": (*_sleeve_phrases("long", "full", "three quarter", "3 4", "wrist length", "bishop"), "sleeves long",
             "sleeve long"),
}

# Garment length (lower and full garments, coats): how far down the legs it reaches.
LENGTH_WORDS: dict[str, tuple[str, ...]] = {
    "mini": ("miniskirt", "minidress", "micro", "micro mini"),
    "short": ("above the knee", "above knee"),
    "knee": ("knee length", "knee high", "knee", "to the knee"),
    "midi": ("mid length", "mid calf", "calf length", "tea length", "three quarter length"),
    "long": ("full length", "ankle length", "longline"),
    "maxi": ("maxiskirt", "maxidress", "floor length", "floor sweeping", "floor skimming"),
}

COLORS: dict[str, tuple[str, ...]] = {
    "red": (), "blue": (), "green": (), "yellow": (), "orange": (), "purple": (), "pink": (), "black": (),
    "white": (), "grey": ("gray",), "brown": (), "beige": (), "navy": (), "teal": (), "turquoise": (),
    "maroon": (), "burgundy": (), "khaki": (), "olive": (), "cream": (), "ivory": (), "gold": ("golden",),
    "silver": (), "lavender": (), "lilac": (), "mint": (), "coral": (), "tan": (), "charcoal": (),
    "indigo": (), "violet": (), "magenta": (), "cyan": (), "mustard": (), "camel": (), "nude": (),
    "off white": ("offwhite",), "multicolor": ("multicolour", "multicolored", "multicoloured", "rainbow"),
}
# Words that may precede a colour and stay part of it ("light blue", "navy blue", "hot pink").
COLOR_MODIFIERS: tuple[str, ...] = (
    "light", "dark", "pale", "bright", "deep", "pastel", "neon", "dusty", "navy", "sky", "royal", "baby", "hot",
    "forest", "olive", "electric", "powder", "burnt", "wine",
)

PATTERNS: dict[str, tuple[str, ...]] = {
    "horizontal stripes": (
        "horizontal stripe", "horizontally striped", "horizontal striped", "breton stripe", "breton stripes",
    ),
    "vertical stripes": (
        "vertical stripe", "vertically striped", "vertical striped", "pinstripe", "pinstriped", "pin striped",
    ),
    "striped": ("stripe", "stripes", "stripy", "stripey"),
    "polka dot": ("polka dots", "polka dotted", "dotted", "dot", "dots", "spotted", "spots"),
    "checked": ("check", "checks", "checkered", "chequered", "gingham", "houndstooth"),
    "plaid": ("tartan",),
    "floral": ("flower", "flowers", "flowered", "flowery", "botanical"),
    "plain": ("solid", "solid color", "solid colour", "plain colored", "plain coloured", "monochrome"),
    "graphic": ("graphic print", "logo", "slogan"),
    "camouflage": ("camo",),
    "animal print": ("leopard", "leopard print", "zebra", "zebra print", "snakeskin", "snake print"),
    "paisley": (),
    "geometric": (),
    "tie dye": ("tie dyed",),
    "argyle": (),
    "herringbone": (),
    "color block": ("colour block", "colorblock", "color blocked", "colour blocked"),
    "print": ("printed",),
}

MATERIALS: dict[str, tuple[str, ...]] = {
    "cotton": (), "silk": ("silky",), "denim": (), "wool": ("woolen", "woollen", "merino"),
    "cashmere": (), "leather": ("faux leather",), "suede": (), "linen": (), "polyester": (), "nylon": (),
    "satin": (), "velvet": (), "chiffon": (), "lace": (), "knit": ("knitted",), "crepe": (),
    "crepe de chine": (), "jersey": (), "fleece": (), "corduroy": (), "tweed": (), "fur": ("faux fur",),
    "sequin": ("sequined", "sequinned"), "mesh": (), "viscose": (), "rayon": (), "spandex": ("lycra", "elastane"),
    "tulle": (), "organza": (), "twill": (), "flannel": (), "canvas": (),
}


# Words that carry no garment attribute of their own: never reported as ignored. Articles, pronouns, prepositions,
# verbs of wearing and editing, and words that name an attribute without giving it ("the colour", "pattern").
STOP_WORDS: frozenset[str] = frozenset(
    (
        "a an the it its this that these those one ones some any me my i you your he him his she her we our they"
        " them their with and or of in on to into for from at by as over under so also too plus"
        " make made making wear wearing worn wears dressed be is are was were should would could can will want"
        " like please add adding"
        " color colour colored coloured colors colours pattern patterned fabric material style look looking"
        " garment piece"
    ).split()
)
# A colour run right after one of these words and before a pattern word names the pattern's colours
# ("shirt with white polka dot", "add white plaid"); so does one before a pattern noun ("white stripes").
PATTERN_COLOR_LEADS: tuple[str, ...] = ("with", "add", "adding", "plus")
# Words that join the colours of one run ("red and white stripes") or lead to colours after a pattern noun
# ("stripes in blue", "make the stripes blue").
COLOR_RUN_JOINERS: tuple[str, ...] = ("and", "or")
PATTERN_COLOR_AFTER: tuple[str, ...] = ("in", "to", "into")
TERM_KINDS: tuple[str, ...] = ("garment", "sleeve", "length", "color", "pattern", "material")


# ---------------------------------------------------------------------------------------------------
# Parsed instruction.


@dataclass
class GarmentAttributes:
    """Attribute words of an instruction (canonical forms, in the order they appear in the text).

    sleeve: 'sleeveless' | 'short' | 'long' | None — from sleeve words, else implied by the garment word.
    length: 'mini' | 'short' | 'knee' | 'midi' | 'long' | 'maxi' | None — likewise ('jeans' -> 'long').
    colors: every colour word, the pattern's colours included.
    pattern_colors: the colours of `colors` that name a pattern's colours: those before a pattern noun ("white
        stripes"), after "with"/"add" ("with white polka dot"), after a pattern noun ("stripes in blue"), and all
        but the first of two or more before a pattern adjective ("red and white striped" = red with white stripes).
    """

    sleeve: str | None = None
    length: str | None = None
    colors: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    materials: list[str] = field(default_factory=list)
    pattern_colors: list[str] = field(default_factory=list)


@dataclass
class Instruction:
    """A parsed edit instruction.

    text:          the instruction as given.
    category:      'upper' | 'lower' | 'full' | 'outerwear', or None when the text names no garment (and none was
                   given); the category of the first garment word in the text unless given explicitly.
    garment:       canonical form of the first garment word ('t-shirt' for 'T-shirts'), or None.
    garments:      canonical forms of every garment word, in text order (the first is `garment`).
    attributes:    sleeve, length, colours, patterns, materials.
    ignored_words: words of the text (normalised, once each, in text order) that are in no vocabulary and are not
                   STOP_WORDS: what the parser did not use ("ein rotes T-Shirt" -> ['ein', 'rotes']).
    """

    text: str
    category: str | None
    garment: str | None
    garments: list[str] = field(default_factory=list)
    attributes: GarmentAttributes = field(default_factory=GarmentAttributes)
    ignored_words: list[str] = field(default_factory=list)


def normalize_text(text: str) -> str:
    """Lower case, accents stripped, every run of non-alphanumerics one space ('T-Shirt!' -> 't shirt')."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


class PhraseMatcher:
    """Finds vocabulary phrases in normalised text: longest phrase first at each position, word-bounded.

    vocabulary maps a canonical word to its synonym phrases; `plurals` also accepts an 's'/'es' ending;
    `with_canonical` counts the canonical word itself as a phrase.
    """

    def __init__(self, vocabulary: Mapping[str, Sequence[str]], plurals: bool, with_canonical: bool = True) -> None:
        self.canonical: dict[str, str] = {}
        for canonical, synonyms in vocabulary.items():
            for phrase in (canonical, *synonyms) if with_canonical else synonyms:
                self.canonical[normalize_text(phrase)] = canonical
        phrases = sorted(self.canonical, key=lambda p: (-len(p.split()), -len(p)))
        suffix = "(?:e?s)?" if plurals else ""
        alternatives = "|".join(re.escape(p).replace(r"\ ", " ") for p in phrases)
        self._regex = re.compile(rf"\b({alternatives}){suffix}\b")

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, canonical) of each match in normalised `text`, left to right, non-overlapping."""
        return [(m.start(), m.end(), self.canonical[m.group(1)]) for m in self._regex.finditer(text)]


def _blank(text: str, spans: Sequence[tuple[int, int, str]]) -> str:
    """`text` with the matched spans replaced by spaces (positions kept)."""
    chars = list(text)
    for start, end, _ in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


class _ColorMatcher:
    """Colour words, each with an optional modifier kept ('light blue', 'navy blue', 'grey' for 'gray')."""

    def __init__(self) -> None:
        self.canonical = {normalize_text(p): c for c, syn in COLORS.items() for p in (c, *syn)}
        bases = "|".join(re.escape(p).replace(r"\ ", " ") for p in sorted(self.canonical, key=len, reverse=True))
        modifiers = "|".join(re.escape(m) for m in COLOR_MODIFIERS)
        self._regex = re.compile(rf"\b(?:({modifiers}) )?({bases})\b")

    def find(self, text: str) -> list[tuple[int, int, str]]:
        out = []
        for m in self._regex.finditer(text):
            base = self.canonical[m.group(2)]
            out.append((m.start(), m.end(), f"{m.group(1)} {base}" if m.group(1) else base))
        return out


# Built on first use (not at import), then reused.
_MATCHERS: dict[str, PhraseMatcher | _ColorMatcher] = {}


def _matcher(name: str) -> PhraseMatcher | _ColorMatcher:
    if name not in _MATCHERS:
        if name == "color":
            _MATCHERS[name] = _ColorMatcher()
        else:
            # name -> (vocabulary, plurals tolerated, canonical word counts)
            vocabularies: dict[str, tuple[Mapping[str, Sequence[str]], bool, bool]] = {
                "garment": ({k: v[1] for k, v in GARMENTS.items()}, True, True),
                "sleeve": (SLEEVE_WORDS, False, False),
                "length": (LENGTH_WORDS, False, True),
                "pattern": (PATTERNS, True, True),
                "material": (MATERIALS, True, True),
            }
            vocabulary, plurals, with_canonical = vocabularies[name]
            _MATCHERS[name] = PhraseMatcher(vocabulary, plurals, with_canonical)
    return _MATCHERS[name]


# ---------------------------------------------------------------------------------------------------
# Scanning: where each vocabulary phrase is in the text.


@dataclass(frozen=True)
class Term:
    """One vocabulary phrase found in an instruction.

    kind:   one of TERM_KINDS; value: its canonical form ('t-shirt', 'light blue', 'striped');
    first, last: indices of its first and last word in Scan.words; phrase: the normalised words matched.
    """

    kind: str
    value: str
    first: int
    last: int
    phrase: str


@dataclass(frozen=True)
class Scan:
    """An instruction's normalised text, its words and every vocabulary term in it (by position).

    Terms of different kinds may share words ('miniskirt' is a garment and a length). pattern_colors: the colour
    terms that name a pattern's colours (see GarmentAttributes.pattern_colors).
    """

    text: str
    words: tuple[str, ...]
    terms: tuple[Term, ...]
    pattern_colors: tuple[Term, ...]

    def of_kind(self, kind: str) -> list[Term]:
        """Terms of one kind, in text order."""
        return [t for t in self.terms if t.kind == kind]

    def word_index(self, char: int) -> int:
        """Index of the word containing character `char` of `text` (or the word starting after it)."""
        return self.text[:char].count(" ")

    def covered(self) -> set[int]:
        """Indices of the words that belong to some term."""
        return {i for t in self.terms for i in range(t.first, t.last + 1)}


def _pattern_color_terms(words: Sequence[str], terms: Sequence[Term]) -> list[Term]:
    """Colour terms naming a pattern's colours (rules in GarmentAttributes.pattern_colors)."""
    color_ending = {t.last: t for t in terms if t.kind == "color"}
    color_starting = {t.first: t for t in terms if t.kind == "color"}
    out: list[Term] = []
    for pattern in (t for t in terms if t.kind == "pattern"):
        run: list[Term] = []
        j = pattern.first - 1
        while j >= 0:
            if j in color_ending:
                run.insert(0, color_ending[j])
                j = color_ending[j].first - 1
            elif run and words[j] in COLOR_RUN_JOINERS and j - 1 in color_ending:
                j -= 1
            else:
                break
        lead = j
        while lead >= 0 and words[lead] in ("a", "an", "some"):
            lead -= 1
        noun = pattern.phrase.endswith("s") and pattern.value != "plain"
        if run and (noun or (lead >= 0 and words[lead] in PATTERN_COLOR_LEADS)):
            out += run
        elif len(run) >= 2:
            out += run[1:]
        k = pattern.last + 1
        if noun and k < len(words):
            if words[k] in PATTERN_COLOR_AFTER:
                k += 1
            while k in color_starting:
                out.append(color_starting[k])
                k = color_starting[k].last + 1
                if k + 1 < len(words) and words[k] in COLOR_RUN_JOINERS and k + 1 in color_starting:
                    k += 1
    return out


def scan_instruction(text: str) -> Scan:
    """Normalise `text` and find every garment, sleeve, length, colour, pattern and material phrase in it.

    Raises:
        ValueError: `text` is not a string, or is empty or whitespace only.
    """
    if not isinstance(text, str):
        raise ValueError(f"instruction text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("instruction text is empty")
    norm = normalize_text(text)
    found: dict[str, list[tuple[int, int, str]]] = {
        kind: _matcher(kind).find(norm) for kind in ("garment", "sleeve", "pattern", "material", "color")
    }
    # 'long' in 'long sleeve' is a sleeve, not a length: lengths are read with the sleeve phrases blanked.
    found["length"] = _matcher("length").find(_blank(norm, found["sleeve"]))
    words = tuple(norm.split())
    terms = []
    for kind in TERM_KINDS:
        for start, end, value in found[kind]:
            first, last = norm[:start].count(" "), norm[:end].count(" ")
            terms.append(Term(kind, value, first, last, norm[start:end]))
    terms.sort(key=lambda t: (t.first, TERM_KINDS.index(t.kind)))
    return Scan(norm, words, tuple(terms), tuple(_pattern_color_terms(words, terms)))


def check_category(category: str) -> str:
    """`category` if it is one of GARMENT_CATEGORIES, else ValueError listing them."""
    if category not in GARMENT_CATEGORIES:
        raise ValueError(f"unknown garment category {category!r}; expected one of {list(GARMENT_CATEGORIES)}")
    return category


def parse_instruction(text: str, category: str | None = None) -> Instruction:
    """Parse an edit instruction into garment category and attributes.

    Args:
        text: free text, e.g. "red polka dot dress" or "long sleeve silk shirt with blue stripes".
        category: an explicit category (CLI --category) that overrides the one read from the text.

    Returns:
        Instruction; its category is None when the text names no garment and none is given (see
        classify_category for the CLIP fallback); its ignored_words lists the words it did not use.

    Raises:
        ValueError: empty or whitespace-only text, or an unknown `category`.
    """
    scan = scan_instruction(text)
    if category is not None:
        check_category(category)
    names = _unique([t.value for t in scan.of_kind("garment")])
    garment = names[0] if names else None
    if category is None and garment is not None:
        category = GARMENTS[garment][0]
    sleeves, lengths = scan.of_kind("sleeve"), scan.of_kind("length")
    implied = GARMENT_IMPLIES.get(garment, {}) if garment is not None else {}
    attributes = GarmentAttributes(
        sleeve=sleeves[0].value if sleeves else implied.get("sleeve"),
        length=lengths[0].value if lengths else implied.get("length"),
        colors=_unique([t.value for t in scan.of_kind("color")]),
        patterns=_unique([t.value for t in scan.of_kind("pattern")]),
        materials=_unique([t.value for t in scan.of_kind("material")]),
        pattern_colors=_unique([t.value for t in scan.pattern_colors]),
    )
    covered = scan.covered()
    ignored = _unique([w for i, w in enumerate(scan.words) if i not in covered and w not in STOP_WORDS])
    return Instruction(
        text=text, category=category, garment=garment, garments=names, attributes=attributes, ignored_words=ignored
    )


# ---------------------------------------------------------------------------------------------------
# CLIP zero-shot fallback.

# Prompts per category; a category's text feature is the renormalised mean of its prompts' features (CLIP's
# prompt ensembling). Each names garments typical of the category as worn by a person in a photo.
CATEGORY_PROMPTS: dict[str, tuple[str, ...]] = {
    "upper": (
        "a photo of a person wearing a shirt",
        "a photo of a person wearing a top",
        "a photo of a person wearing a t-shirt",
        "a photo of a person wearing a sweater",
    ),
    "lower": (
        "a photo of a person wearing trousers",
        "a photo of a person wearing a skirt",
        "a photo of a person wearing shorts",
        "a photo of a person wearing jeans",
    ),
    "full": (
        "a photo of a person wearing a dress",
        "a photo of a person wearing a jumpsuit",
        "a photo of a person wearing a gown",
    ),
    "outerwear": (
        "a photo of a person wearing a jacket",
        "a photo of a person wearing a coat",
        "a photo of a person wearing a blazer",
    ),
}


def category_scores(
    clip: ClipGuide,
    images_01: torch.Tensor | None,
    text: str,
    categories: Sequence[str] = GARMENT_CATEGORIES,
    prompts: Mapping[str, Sequence[str]] = CATEGORY_PROMPTS,
    image_weight: float = 0.5,
    logit_scale: float = 100.0,
) -> torch.Tensor:
    """Log-probability scores [N, C] (N = images, or 1 without images) of `categories` for `text`.

    score[n, c] = log softmax_c(s * cos(text, prompt_c)) + image_weight * log softmax_c(s * cos(image_n, prompt_c)),
    with s = `logit_scale` (CLIP's 100) and prompt_c the ensembled prompt feature of category c. The text term is
    the primary signal (which garment the words evoke); the image term says which garment the photo shows and
    decides when the text is neutral ("make it red"). image_weight 0 or no images = text only.
    """
    if not categories:
        raise ValueError("categories: expected at least one garment category")
    missing = [c for c in categories if c not in prompts or not prompts[c]]
    if missing:
        raise ValueError(f"no prompts for categories {missing}; prompts cover {list(prompts)}")
    if image_weight < 0:
        raise ValueError(f"image_weight: expected >= 0, got {image_weight}")
    if not text.strip():
        raise ValueError("instruction text is empty")
    flat = [p for c in categories for p in prompts[c]]
    features = F.normalize(clip.encode_text(flat).float(), dim=-1)
    class_features, start = [], 0
    for c in categories:
        n = len(prompts[c])
        class_features.append(F.normalize(features[start : start + n].mean(0), dim=-1))
        start += n
    classes = torch.stack(class_features)  # [C, D]
    text_features = F.normalize(clip.encode_text([text]).float(), dim=-1).to(classes.device)  # [1, D]
    scores = torch.log_softmax(logit_scale * text_features @ classes.T, dim=-1)  # [1, C]
    if images_01 is not None:
        check_shape("images_01", images_01, [None, 3, None, None])
        scores = scores.expand(images_01.shape[0], -1)
        if image_weight > 0:
            with torch.no_grad():
                image_features = F.normalize(clip.encode_image(images_01).float(), dim=-1).to(classes.device)
            scores = scores + image_weight * torch.log_softmax(logit_scale * image_features @ classes.T, dim=-1)
    return scores


def classify_category(
    clip: ClipGuide,
    images_01: torch.Tensor | None,
    text: str,
    categories: Sequence[str] = GARMENT_CATEGORIES,
    prompts: Mapping[str, Sequence[str]] = CATEGORY_PROMPTS,
    image_weight: float = 0.5,
) -> list[str]:
    """CLIP zero-shot garment category when the text names no garment: one category per image.

    Compares the text (and, weighted by `image_weight`, each image [N,3,H,W] in [0,1]) with CATEGORY_PROMPTS;
    see category_scores for the rule. Returns N categories, or one when `images_01` is None.
    """
    scores = category_scores(clip, images_01, text, categories, prompts, image_weight)
    return [categories[i] for i in scores.argmax(dim=-1).tolist()]
