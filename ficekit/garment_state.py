"""The garment being edited, and follow-up instructions as changes to it.

A `GarmentState` is what a multi-round edit is aiming at: garment word and category, colours, pattern and its
colours, material, sleeve and length. `apply_instruction(state, text)` reads one instruction with the vocabulary
of ficekit.instruction and changes only what the text names: "make it red" changes the colour, "add white
stripes" the pattern, "make it a dress" the garment (and the sleeve and length that came with the old one).
Each round's CLIP target is `state.describe()`, never the raw follow-up text, so "add white stripes" after
"red t-shirt" aims at "red t-shirt with white stripes". Words it does not know are reported, never dropped
silently; a text with nothing it can read raises InstructionNotUnderstood.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from ficekit.instruction import (
    COLOR_MODIFIERS,
    COLORS,
    GARMENT_IMPLIES,
    GARMENTS,
    LENGTHS,
    MATERIALS,
    PATTERNS,
    SLEEVES,
    STOP_WORDS,
    GarmentAttributes,
    Instruction,
    PhraseMatcher,
    Scan,
    Term,
    check_category,
    scan_instruction,
)
from ficekit.masking import CATEGORY_RULES

# ---------------------------------------------------------------------------------------------------
# Vocabulary of follow-ups (data). Phrases are normalised like ficekit.instruction's tables.

# Session commands: the text alone (plus STOP_WORDS) is the command; the state does not change.
COMMANDS: dict[str, tuple[str, ...]] = {
    "undo": ("go back", "revert", "step back"),
    "redo": (),
    "reset": ("start over", "start again", "restart", "from scratch", "start from scratch"),
}
# Markers whose scope (the words after them, up to a SCOPE_BREAKERS word or the next marker) is removed or added.
MARKERS: dict[str, tuple[str, ...]] = {
    "remove": ("no", "not", "without", "drop", "take off", "take away", "get rid of", "lose", "delete", "minus"),
    "add": ("plus", "also", "as well"),
}
SCOPE_BREAKERS: frozenset[str] = frozenset(
    "make turn change set use switch swap replace but then instead from on in with to into".split()
)
# Words used by follow-ups without a value of their own ("polka dots instead", "change the colour to green").
FOLLOW_UP_WORDS: frozenset[str] = frozenset(
    "change turn switch swap replace set use instead rather than now again just only go same".split()
)
# A garment word after one of these (articles skipped) names the garment worn now, not a new one:
# "make the shirt blue", "a dress instead of a skirt", "change from shirt to dress".
REFERENCE_WORDS: frozenset[str] = frozenset("the this that these those my its his her your their of than from".split())
ARTICLES: tuple[str, ...] = ("a", "an", "some")

# Relative length changes: word -> step along LENGTHS (or along SLEEVES when 'sleeve(s)' is within two words:
# "longer sleeves", "shorten the sleeves"). They start from the current value or the category's default.
RELATIVE_WORDS: dict[str, int] = {"longer": 1, "lengthen": 1, "shorter": -1, "shorten": -1}
SLEEVE_NOUNS: tuple[str, ...] = ("sleeve", "sleeves")
RELATIVE_START_LENGTH = "short"  # where "longer" starts for a category without a default length (a jacket: hips)

# How describe() writes each value (canonical -> words). A pattern has an adjective form ("striped cotton
# shirt") and a noun form ("shirt with white stripes"); None = that form is not used.
SLEEVE_PHRASES: dict[str, str] = {"sleeveless": "sleeveless", "short": "short-sleeved", "long": "long-sleeved"}
LENGTH_PHRASES: dict[str, str] = {
    "mini": "mini", "short": "short", "knee": "knee-length", "midi": "midi", "long": "long", "maxi": "maxi",
}
PATTERN_FORMS: dict[str, tuple[str | None, str | None]] = {
    "horizontal stripes": ("horizontal-striped", "horizontal stripes"),
    "vertical stripes": ("vertical-striped", "vertical stripes"),
    "striped": ("striped", "stripes"),
    "polka dot": ("polka dot", "polka dots"),
    "checked": ("checked", "checks"),
    "plaid": ("plaid", "plaid"),
    "floral": ("floral", "flowers"),
    "plain": ("plain", None),
    "graphic": ("graphic", "graphic print"),
    "camouflage": ("camouflage", "camouflage"),
    "animal print": ("animal print", "animal print"),
    "paisley": ("paisley", "paisley"),
    "geometric": ("geometric", "geometric pattern"),
    "tie dye": ("tie-dye", "tie-dye"),
    "argyle": ("argyle", "argyle"),
    "herringbone": ("herringbone", "herringbone"),
    "color block": ("colour-block", "colour blocks"),
    "print": ("printed", "print"),
}
# Garment words describe() writes differently from their canonical key (the plural the garment is named by).
GARMENT_NOUNS: dict[str, str] = {"overall": "overalls"}
# The noun for a state with a category but no garment word (a category chosen by CLIP); "garment" with neither.
CATEGORY_NOUNS: dict[str, str] = {"upper": "top", "lower": "bottoms", "full": "dress", "outerwear": "jacket"}
NO_GARMENT_NOUN = "garment"
# How StateChange.message names each field.
FIELD_NAMES: dict[str, str] = {
    "category": "category", "garment": "garment", "colors": "colour", "pattern": "pattern",
    "pattern_colors": "pattern colour", "material": "material", "sleeve": "sleeve", "length": "length",
}


# ---------------------------------------------------------------------------------------------------
# The state.


def _is_color(value: str) -> bool:
    """A canonical colour of COLORS, optionally after one COLOR_MODIFIERS word ('light blue')."""
    if value in COLORS:
        return True
    modifier, _, base = value.partition(" ")
    return modifier in COLOR_MODIFIERS and base in COLORS


def _join_words(items: Sequence[str]) -> str:
    """'red', 'red and white', 'red, white and blue'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


@dataclass(frozen=True)
class GarmentState:
    """The garment an edit aims at; every value is canonical (the keys of ficekit.instruction's tables).

    category: 'upper' | 'lower' | 'full' | 'outerwear' | None; garment: a GARMENTS key or None (category alone,
    e.g. chosen by CLIP); colors: the garment's colours; pattern: a PATTERNS key or None ('plain' = explicitly
    without a pattern); pattern_colors: the pattern's colours ("white" in "with white stripes"); material: a
    MATERIALS key or None; sleeve: a SLEEVES value or None (the category's default); length: a LENGTHS value or None.
    Sleeve and length include what the garment word implies (a t-shirt's 'short'), as masking needs them.
    """

    category: str | None = None
    garment: str | None = None
    colors: tuple[str, ...] = ()
    pattern: str | None = None
    pattern_colors: tuple[str, ...] = ()
    material: str | None = None
    sleeve: str | None = None
    length: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "colors", tuple(self.colors))  # accept lists; frozen state keeps tuples
        object.__setattr__(self, "pattern_colors", tuple(self.pattern_colors))
        if self.category is not None:
            check_category(self.category)
        checks = (
            ("garment", self.garment, GARMENTS),
            ("pattern", self.pattern, PATTERNS),
            ("material", self.material, MATERIALS),
            ("sleeve", self.sleeve, SLEEVES),
            ("length", self.length, LENGTHS),
        )
        for name, value, known in checks:
            if value is not None and value not in known:
                raise ValueError(f"unknown {name} {value!r}; expected one of {list(known)} or None")
        for name, colors in (("colors", self.colors), ("pattern_colors", self.pattern_colors)):
            bad = [c for c in colors if not isinstance(c, str) or not _is_color(c)]
            if bad:
                raise ValueError(f"{name}: unknown colours {bad}; expected keys of COLORS, optionally after a modifier")

    def noun(self) -> str:
        """The garment word (GARMENT_NOUNS), else the category's noun (CATEGORY_NOUNS), else 'garment'."""
        if self.garment is not None:
            return GARMENT_NOUNS.get(self.garment, self.garment)
        return CATEGORY_NOUNS[self.category] if self.category is not None else NO_GARMENT_NOUN

    def describe(self) -> str:
        """The composed description, e.g. "red long-sleeved cotton t-shirt with white stripes".

        Order: colours, pattern adjective, sleeve, length, material, garment, "with <colours> <pattern noun>"
        (the order of the demo's training captions). A sleeve or length the garment word implies is not
        written (a t-shirt is short-sleeved); 'plain' and the pattern of a multi-coloured garment come first
        ("plain red t-shirt", "striped red and white shirt"), so that parse_instruction reads the text back.
        """
        implied = GARMENT_IMPLIES.get(self.garment, {}) if self.garment is not None else {}
        adjective, noun = PATTERN_FORMS[self.pattern] if self.pattern is not None else (None, None)
        with_phrase = None
        if self.pattern is not None and self.pattern != "plain" and (self.pattern_colors or adjective is None):
            with_phrase = " ".join(["with", *([_join_words(self.pattern_colors)] if self.pattern_colors else []), noun])
            adjective = None
        colors = [_join_words(self.colors)] if self.colors else []
        words = [adjective, *colors] if self.pattern == "plain" or len(self.colors) >= 2 else [*colors, adjective]
        if self.sleeve is not None and self.sleeve != implied.get("sleeve"):
            words.append(SLEEVE_PHRASES[self.sleeve])
        if self.length is not None and self.length != implied.get("length"):
            words.append(LENGTH_PHRASES[self.length])
        words += [self.material, self.noun(), with_phrase]
        return " ".join(w for w in words if w)

    def __str__(self) -> str:
        return self.describe()

    def to_instruction(self) -> Instruction:
        """The Instruction masking.build_masks and the pipeline need: text = describe(), the state's attributes."""
        return Instruction(
            text=self.describe(),
            category=self.category,
            garment=self.garment,
            garments=[self.garment] if self.garment is not None else [],
            attributes=GarmentAttributes(
                sleeve=self.sleeve,
                length=self.length,
                colors=list(dict.fromkeys((*self.colors, *self.pattern_colors))),
                patterns=[self.pattern] if self.pattern is not None else [],
                materials=[self.material] if self.material is not None else [],
                pattern_colors=list(self.pattern_colors),
            ),
        )

    @classmethod
    def from_instruction(cls, instruction: Instruction) -> GarmentState:
        """The state an instruction describes: its category, garment, sleeve and length, the first pattern and
        material it names, its pattern colours, and its other colours as the garment's."""
        a = instruction.attributes
        pattern = a.patterns[0] if a.patterns else None
        pattern_colors = tuple(a.pattern_colors) if pattern not in (None, "plain") else ()
        return cls(
            category=instruction.category,
            garment=instruction.garment,
            colors=tuple(c for c in a.colors if c not in pattern_colors),
            pattern=pattern,
            pattern_colors=pattern_colors,
            material=a.materials[0] if a.materials else None,
            sleeve=a.sleeve,
            length=a.length,
        )


# ---------------------------------------------------------------------------------------------------
# Follow-up instructions.


class InstructionNotUnderstood(ValueError):
    """Nothing in an instruction could be read (or it asks for what a state cannot do); `words` lists the
    words that were not understood."""

    def __init__(self, text: str, words: Sequence[str], reason: str | None = None) -> None:
        self.text = text
        self.words = tuple(words)
        if reason is None:
            reason = "it names no garment, colour, pattern, material, sleeve or length"
        unknown = f"; words not understood: {', '.join(self.words)}" if self.words else ""
        super().__init__(f"could not read the instruction {text!r}: {reason}{unknown}")


@dataclass(frozen=True)
class StateChange:
    """What one instruction did.

    state:         the state after the instruction (for a command: the state given, or an empty one).
    changed:       names of the GarmentState fields that changed, in field order.
    ignored_words: words of the text that were not understood (see Instruction.ignored_words).
    command:       'undo' | 'redo' | 'reset' when the text is a session command, else None.
    message:       one human line: the new description and what changed, or the command; plus ignored words.
    """

    state: GarmentState
    changed: tuple[str, ...]
    ignored_words: tuple[str, ...]
    command: str | None
    message: str


_FOLLOW_UP_MATCHERS: dict[str, PhraseMatcher] = {}


def _follow_up_matcher(name: str) -> PhraseMatcher:
    if name not in _FOLLOW_UP_MATCHERS:
        _FOLLOW_UP_MATCHERS[name] = PhraseMatcher(COMMANDS if name == "command" else MARKERS, plurals=False)
    return _FOLLOW_UP_MATCHERS[name]


def _markers(scan: Scan, name: str) -> list[tuple[int, int, str]]:
    """(first word, last word, canonical) of COMMANDS or MARKERS phrases that overlap no vocabulary term."""
    covered = scan.covered()
    out = []
    for start, end, canonical in _follow_up_matcher(name).find(scan.text):
        first, last = scan.word_index(start), scan.word_index(end)
        if not covered.intersection(range(first, last + 1)):
            out.append((first, last, canonical))
    return out


def _scopes(scan: Scan, markers: Sequence[tuple[int, int, str]]) -> dict[int, str]:
    """word index -> 'remove' | 'add' for the words each marker governs."""
    scope: dict[int, str] = {}
    starts = {first for first, _, _ in markers}
    for _, last, kind in markers:
        i = last + 1
        while i < len(scan.words) and i not in starts and scan.words[i] not in SCOPE_BREAKERS:
            scope[i] = kind
            i += 1
    return scope


def _is_reference(scan: Scan, term: Term) -> bool:
    """Whether a garment word refers to the garment worn now ("the shirt", "instead of a dress")."""
    i = term.first - 1
    while i >= 0 and scan.words[i] in ARTICLES:
        i -= 1
    return i >= 0 and scan.words[i] in REFERENCE_WORDS


def _category_uses(category: str, attribute: str) -> bool:
    """Whether masks of `category` read a sleeve ('sleeve') or length ('length') word (masking.CATEGORY_RULES)."""
    rule = CATEGORY_RULES[category]
    return rule.sleeve_default is not None if attribute == "sleeve" else rule.uses_length


def _carried(attribute: str, old: GarmentState, garment: str) -> str | None:
    """Sleeve or length of the new `garment` when the text gives none: what the new garment implies; else the
    old value if the user chose it (not implied by the old garment) and the new category uses it; else None."""
    implied = GARMENT_IMPLIES.get(garment, {}).get(attribute)
    if implied is not None:
        return implied
    value = getattr(old, attribute)
    if value is None or (old.garment is not None and GARMENT_IMPLIES.get(old.garment, {}).get(attribute) == value):
        return None
    return value if _category_uses(GARMENTS[garment][0], attribute) else None


def _relative(scan: Scan, covered: set[int]) -> list[tuple[int, str, int]]:
    """(word index, 'sleeve' | 'length', step) of each relative word (RELATIVE_WORDS) outside vocabulary terms."""
    out = []
    for i, word in enumerate(scan.words):
        if word in RELATIVE_WORDS and i not in covered:
            near = [j for j in range(i - 2, i + 3) if 0 <= j < len(scan.words) and j not in covered]
            attribute = "sleeve" if any(scan.words[j] in SLEEVE_NOUNS for j in near) else "length"
            out.append((i, attribute, RELATIVE_WORDS[word]))
    return out


def _step(state: GarmentState, attribute: str, step: int, r: _Reading) -> tuple[str | None, str]:
    """(new value, note) of the sleeve or length one step longer (+1) or shorter (-1) than now."""
    if state.category is None:
        r.refuse(f"the garment is not known yet, so its {attribute} cannot change; name the garment first")
    rule = CATEGORY_RULES[state.category]
    if not _category_uses(state.category, attribute):
        hint = "; for sleeves say 'longer sleeves'" if attribute == "length" else ""
        r.refuse(f"{state.noun()}: {state.category} garments have no {attribute} to change{hint}")
    order = SLEEVES if attribute == "sleeve" else LENGTHS
    default = rule.sleeve_default if attribute == "sleeve" else rule.length_default or RELATIVE_START_LENGTH
    now = getattr(state, attribute) or default
    index = order.index(now) + step
    if not 0 <= index < len(order):
        return getattr(state, attribute), f"the {attribute} is already {now}"
    return order[index], ""


def _show(value: str | tuple[str, ...] | None) -> str:
    """A field's value as the message writes it ('none', 'red and white')."""
    if not value:
        return "none"
    return _join_words(value) if isinstance(value, tuple) else value


def _message(before: GarmentState | None, after: GarmentState, changed: Sequence[str], r: _Reading) -> str:
    """One line: the new description and what changed, notes, and the words not understood."""
    if before is None:
        head = f"new garment: {after.describe()}"
    elif changed:
        diffs = ", ".join(
            f"{FIELD_NAMES[f]} {_show(getattr(before, f))} -> {_show(getattr(after, f))}" for f in changed
        )
        head = f"now: {after.describe()} (changed {diffs})"
    else:
        head = f"no change: {after.describe()}"
    ignored = [f"ignored words: {', '.join(r.ignored)}"] if r.ignored else []
    return "; ".join([head, *r.notes, *ignored])


def _ignored(scan: Scan, used: set[int]) -> list[str]:
    """Words not used by any term or marker, nor stop or follow-up words: once each, in text order."""
    words = [w for i, w in enumerate(scan.words) if i not in used and w not in STOP_WORDS and w not in FOLLOW_UP_WORDS]
    return list(dict.fromkeys(words))


def apply_instruction(state: GarmentState | None, text: str) -> StateChange:
    """Apply one instruction to a garment state.

    With `state` None the instruction sets the state ("striped cotton shirt"); otherwise it changes what it
    names and keeps the rest: colours ("make it red", "in navy", "change the colour to green", "add blue"),
    pattern ("add white stripes", "polka dots instead", "make the stripes blue", "remove the stripes" or
    "plain" -> 'plain'), material ("wool"), sleeve ("long sleeves", "sleeveless"), length, garment ("make it a
    dress": category follows; sleeve and length become the new garment's, e.g. a tank top is sleeveless, unless
    the text says otherwise; a sleeve or length the user chose is kept where the new category uses it), and
    relative length ("longer", "shorter sleeves": one step along LENGTHS or SLEEVES from the current value or
    the category's default).
    "undo", "redo", "reset" are returned as commands for the session; the state does not change then.

    Raises:
        ValueError: empty text or a state that is not a GarmentState.
        InstructionNotUnderstood: nothing in the text could be read, a command mixed with changes, a garment
            to remove ("no jacket": the edit changes the garment, it cannot take it away), or a relative length
            the garment has not (a t-shirt's length, a garment not known yet).
    """
    if state is not None and not isinstance(state, GarmentState):
        raise ValueError(f"state: expected a GarmentState or None, got {type(state).__name__}")
    reading, commands = _read(text)
    if commands:
        names = sorted(set(commands))
        if reading.scan.terms or reading.relative or len(names) > 1:
            what = f"several commands {names}" if len(names) > 1 else f"the command {names[0]!r} mixed with changes"
            reading.refuse(f"{what}; send a command on its own")
        ignored = reading.ignored
        message = f"command: {names[0]}" + (f"; ignored words: {', '.join(ignored)}" if ignored else "")
        return StateChange(state or GarmentState(), (), ignored, names[0], message)
    if not reading.scan.terms and not reading.relative:
        reading.refuse(None)

    base = state or GarmentState()
    new = base
    for change in (_change_garment, _change_fit, _change_pattern, _change_colors, _change_material):
        new = change(new, reading)
    fields = [f.name for f in dataclasses.fields(GarmentState)]
    changed = tuple(f for f in fields if getattr(new, f) != getattr(base, f))
    return StateChange(new, changed, reading.ignored, None, _message(state, new, changed, reading))


@dataclass
class _Reading:
    """One follow-up text as read: its scan, the terms under a 'remove' or 'add' marker, its relative words
    ((word index, 'sleeve' | 'length', step)), the words not understood, and notes for the message."""

    text: str
    scan: Scan
    removing: list[Term]
    adding: list[Term]
    relative: list[tuple[int, str, int]]
    ignored: tuple[str, ...]
    notes: list[str] = dataclasses.field(default_factory=list)

    def refuse(self, reason: str | None) -> NoReturn:
        raise InstructionNotUnderstood(self.text, self.ignored, reason)

    def kept(self, what: str, values: Sequence[str]) -> str:
        """The first of `values`, noting any other it leaves out ("one pattern at a time: kept striped, not floral")."""
        dropped = [v for v in dict.fromkeys(values) if v != values[0]]
        if dropped:
            self.notes.append(f"one {what} at a time: kept {values[0]}, not {', '.join(dropped)}")
        return values[0]


def _read(text: str) -> tuple[_Reading, list[str]]:
    """Scan a follow-up: vocabulary terms, commands, remove/add markers and their scopes, relative words."""
    scan = scan_instruction(text)
    covered = scan.covered()
    commands = _markers(scan, "command")
    markers = _markers(scan, "marker")
    relative = _relative(scan, covered)
    used = covered | {i for first, last, _ in (*commands, *markers) for i in range(first, last + 1)}
    used |= {i for i, _, _ in relative}
    used |= {
        j for i, attribute, _ in relative if attribute == "sleeve"
        for j in range(i - 2, i + 3) if j < len(scan.words) and scan.words[j] in SLEEVE_NOUNS
    }
    scope = _scopes(scan, markers)
    reading = _Reading(
        text=text,
        scan=scan,
        removing=[t for t in scan.terms if scope.get(t.first) == "remove"],
        adding=[t for t in scan.terms if scope.get(t.first) == "add"],
        relative=relative,
        ignored=tuple(_ignored(scan, used)),
    )
    return reading, [c for _, _, c in commands]


def _change_garment(state: GarmentState, r: _Reading) -> GarmentState:
    """The first newly named garment (category, sleeve and length follow); a reference to the garment worn now
    ("make the shirt blue" on a t-shirt) changes nothing when its category is the same."""
    terms = r.scan.of_kind("garment")
    removed = [t.value for t in terms if t in r.removing]
    if removed:
        r.refuse(f"cannot remove the {removed[0]}; the edit changes the garment: name what it becomes")
    fresh = [t.value for t in terms if not _is_reference(r.scan, t)]
    other = [
        t.value for t in terms
        if state.garment is None or (GARMENTS[t.value][0] != state.category and t.value != state.garment)
    ]
    if not fresh and not other:
        return state
    garment = r.kept("garment", fresh) if fresh else other[0]
    if garment == state.garment:
        return state
    return dataclasses.replace(
        state,
        garment=garment,
        category=GARMENTS[garment][0],
        sleeve=_carried("sleeve", state, garment),
        length=_carried("length", state, garment),
    )


def _change_fit(state: GarmentState, r: _Reading) -> GarmentState:
    """Sleeve and length words, then relative ones ("longer", "shorter sleeves") unless a word says which."""
    sleeves, lengths = r.scan.of_kind("sleeve"), r.scan.of_kind("length")
    if sleeves:
        state = dataclasses.replace(state, sleeve=sleeves[0].value)
    if lengths:
        state = dataclasses.replace(state, length=lengths[0].value)
    for _, attribute, step in r.relative:
        if not (sleeves if attribute == "sleeve" else lengths):
            value, note = _step(state, attribute, step, r)
            state = dataclasses.replace(state, **{attribute: value})
            r.notes += [note] if note else []
    return state


def _change_pattern(state: GarmentState, r: _Reading) -> GarmentState:
    """Removing a pattern makes the garment plain; a new pattern keeps the old one's colours unless it names some."""
    if any(t.kind == "pattern" for t in r.removing):
        state = dataclasses.replace(state, pattern="plain", pattern_colors=())
    patterns = [t.value for t in r.scan.of_kind("pattern") if t not in r.removing]
    if not patterns:
        return state
    pattern = r.kept("pattern", patterns)
    named = tuple(dict.fromkeys(t.value for t in r.scan.pattern_colors if t not in r.removing))
    kept = () if state.pattern in (None, "plain") else state.pattern_colors
    return dataclasses.replace(state, pattern=pattern, pattern_colors=() if pattern == "plain" else named or kept)


def _change_colors(state: GarmentState, r: _Reading) -> GarmentState:
    """Colours named replace the garment's, added ones join them, removed ones leave (the pattern's or the
    garment's). A removed pattern's colours went with it (_change_pattern)."""
    terms = [t for t in r.scan.of_kind("color") if t not in r.scan.pattern_colors]
    for t in (t for t in terms if t in r.removing):
        if t.value in state.pattern_colors:
            state = dataclasses.replace(state, pattern_colors=tuple(c for c in state.pattern_colors if c != t.value))
        elif t.value in state.colors:
            state = dataclasses.replace(state, colors=tuple(c for c in state.colors if c != t.value))
        else:
            r.notes.append(f"no {t.value} to remove")
    named = [t.value for t in terms if t not in r.removing and t not in r.adding]
    if named:
        state = dataclasses.replace(state, colors=tuple(dict.fromkeys(named)))
    added = [t.value for t in terms if t in r.adding]
    if added:
        state = dataclasses.replace(state, colors=tuple(dict.fromkeys((*state.colors, *added))))
    return state


def _change_material(state: GarmentState, r: _Reading) -> GarmentState:
    """One material at a time; removing one leaves none."""
    if any(t.kind == "material" for t in r.removing):
        state = dataclasses.replace(state, material=None)
    materials = [t.value for t in r.scan.of_kind("material") if t not in r.removing]
    return dataclasses.replace(state, material=r.kept("material", materials)) if materials else state
