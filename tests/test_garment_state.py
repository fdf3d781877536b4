"""Garment state: first instructions set it, follow-ups change it, describe() composes the CLIP text."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ficekit.garment_state import (
    CATEGORY_NOUNS,
    LENGTH_PHRASES,
    PATTERN_FORMS,
    SLEEVE_PHRASES,
    GarmentState,
    InstructionNotUnderstood,
    StateChange,
    apply_instruction,
)
from ficekit.instruction import GARMENT_CATEGORIES, LENGTHS, PATTERNS, SLEEVES, parse_instruction
from ficekit.masking import BODY_REGIONS, build_masks, covered_regions
from ficekit.perception.densepose_parts import NUM_DENSEPOSE_CHANNELS


def state_of(*texts: str) -> GarmentState:
    """The state after applying `texts` in order from no state."""
    state = None
    for text in texts:
        state = apply_instruction(state, text).state
    return state


BASE = "red cotton t-shirt with white stripes"

# follow-up on BASE -> (describe() after it, fields that changed)
FOLLOW_UPS = [
    ("make it blue", "blue cotton t-shirt with white stripes", ("colors",)),
    ("in navy", "navy cotton t-shirt with white stripes", ("colors",)),
    ("change the colour to green", "green cotton t-shirt with white stripes", ("colors",)),
    ("make it light blue and white", "light blue and white cotton t-shirt with white stripes", ("colors",)),
    ("add blue", "red and blue cotton t-shirt with white stripes", ("colors",)),
    ("remove the red", "cotton t-shirt with white stripes", ("colors",)),
    ("remove the stripes", "plain red cotton t-shirt", ("pattern", "pattern_colors")),
    ("plain", "plain red cotton t-shirt", ("pattern", "pattern_colors")),
    ("no stripes", "plain red cotton t-shirt", ("pattern", "pattern_colors")),
    ("polka dots instead", "red cotton t-shirt with white polka dots", ("pattern",)),
    ("make the stripes blue", "red cotton t-shirt with blue stripes", ("pattern_colors",)),
    ("black and yellow checks", "red cotton t-shirt with black and yellow checks", ("pattern", "pattern_colors")),
    ("long sleeves", "red long-sleeved cotton t-shirt with white stripes", ("sleeve",)),
    ("sleeveless", "red sleeveless cotton t-shirt with white stripes", ("sleeve",)),
    ("remove the sleeves", "red sleeveless cotton t-shirt with white stripes", ("sleeve",)),
    ("wool", "red wool t-shirt with white stripes", ("material",)),
    ("without the cotton", "red t-shirt with white stripes", ("material",)),
    ("make it a dress", "red cotton dress with white stripes", ("category", "garment", "sleeve")),
    ("make it a tank top", "red cotton tank top with white stripes", ("garment", "sleeve")),
    ("turn it into a dress with long sleeves", "red long-sleeved cotton dress with white stripes",
     ("category", "garment", "sleeve")),
    ("a skirt instead of the t-shirt", "red cotton skirt with white stripes", ("category", "garment", "sleeve")),
    ("make the shirt blue", "blue cotton t-shirt with white stripes", ("colors",)),  # "the shirt": the one worn
    ("make it red", BASE, ()),
]


@pytest.mark.parametrize(("text", "expected", "changed"), FOLLOW_UPS, ids=[f[0] for f in FOLLOW_UPS])
def test_follow_up_changes_the_state(text: str, expected: str, changed: tuple[str, ...]) -> None:
    before = state_of(BASE)
    change = apply_instruction(before, text)
    assert isinstance(change, StateChange) and change.command is None
    assert change.state.describe() == expected
    assert change.changed == changed
    assert change.ignored_words == ()
    for name in {f.name for f in dataclasses.fields(GarmentState)} - set(changed):
        assert getattr(change.state, name) == getattr(before, name), name


def test_the_base_state() -> None:
    assert state_of(BASE) == GarmentState(
        category="upper", garment="t-shirt", colors=("red",), pattern="striped", pattern_colors=("white",),
        material="cotton", sleeve="short", length=None,
    )


def test_first_instruction_sets_the_state() -> None:
    change = apply_instruction(None, "striped cotton shirt")
    assert change.state == GarmentState(category="upper", garment="shirt", pattern="striped", material="cotton")
    assert str(change.state) == change.state.describe() == "striped cotton shirt"
    assert change.changed == ("category", "garment", "pattern", "material")
    assert change.message == "new garment: striped cotton shirt"


def test_colour_stays_the_garments_and_white_goes_to_the_pattern() -> None:
    change = apply_instruction(state_of("red t-shirt"), "add white stripes")
    assert change.state.colors == ("red",) and change.state.pattern_colors == ("white",)
    assert change.state.describe() == "red t-shirt with white stripes"
    assert change.message == (
        "now: red t-shirt with white stripes (changed pattern none -> striped, pattern colour none -> white)"
    )


def test_a_sequence_of_follow_ups() -> None:
    steps = [
        ("red t-shirt", "red t-shirt", "short"),
        ("add white stripes", "red t-shirt with white stripes", "short"),
        ("remove the stripes", "plain red t-shirt", "short"),
        ("long sleeves", "plain red long-sleeved t-shirt", "long"),
        ("make it a dress", "plain red long-sleeved dress", "long"),  # chosen sleeves carry over to a dress
        ("wool", "plain red long-sleeved wool dress", "long"),
    ]
    state = None
    for text, expected, sleeve in steps:
        state = apply_instruction(state, text).state
        assert (state.describe(), state.sleeve) == (expected, sleeve), text
    assert (state.category, state.garment, state.material, state.colors) == ("full", "dress", "wool", ("red",))


def test_two_colour_sequence_and_pattern_swap() -> None:
    state = state_of("navy dress", "red and white striped", "polka dots instead", "make the dots yellow")
    assert state.describe() == "red dress with yellow polka dots"


# -- garment changes: category, sleeve and length follow ---------------------------------------


@pytest.mark.parametrize(
    ("texts", "expected", "sleeve", "length"),
    [
        (("long-sleeved red shirt", "make it a tank top"), "red tank top", "sleeveless", None),
        (("long-sleeved red shirt", "make it a tank top with long sleeves"), "red long-sleeved tank top", "long", None),
        (("red t-shirt", "make it a dress"), "red dress", None, None),  # the t-shirt's short sleeves were its own
        (("red shirt", "make it a t-shirt"), "red t-shirt", "short", None),
        (("blue jeans", "make it a skirt"), "blue skirt", None, None),  # jeans' length was the jeans'
        (("maxi skirt", "make it a dress"), "maxi dress", None, "maxi"),  # a chosen length carries over
        (("maxi skirt", "make it a t-shirt"), "t-shirt", "short", None),  # tops take no length
        (("long-sleeved shirt", "make it jeans"), "jeans", None, "long"),  # trousers take no sleeve
        (("make it red", "a dress"), "red dress", None, None),
        (("red shirt", "change from shirt to dress"), "red dress", None, None),
    ],
)
def test_garment_change_defaults(texts: tuple[str, ...], expected: str, sleeve: str, length: str) -> None:
    state = state_of(*texts)
    assert (state.describe(), state.sleeve, state.length) == (expected, sleeve, length)


def test_garment_change_sets_the_category() -> None:
    assert state_of("red t-shirt", "make it a dress").category == "full"
    assert state_of("red t-shirt", "make it a coat").category == "outerwear"
    assert state_of("red t-shirt", "make it a skirt").category == "lower"


def test_a_category_without_a_garment_word_is_kept_and_described() -> None:
    state = dataclasses.replace(state_of("make it red"), category="upper")  # e.g. chosen by CLIP
    assert state.describe() == "red top"
    assert apply_instruction(state, "long sleeves").state.describe() == "red long-sleeved top"
    assert apply_instruction(state, "make the shirt blue").state.garment == "shirt"  # names what it is


# -- relative length: longer, shorter ------------------------------------------------------------------


def test_longer_and_shorter_step_along_the_lengths() -> None:
    state = state_of("red skirt")  # a skirt's masks default to 'short'
    seen = []
    for text in ("make it longer", "longer", "longer", "longer", "shorter"):
        state = apply_instruction(state, text).state
        seen.append(state.length)
    assert seen == ["knee", "midi", "long", "maxi", "long"]
    assert state.describe() == "red long skirt"
    change = apply_instruction(state_of("maxi dress"), "longer")
    assert change.changed == () and "the length is already maxi" in change.message
    assert state_of("denim jacket", "longer").describe() == "knee-length denim jacket"
    assert state_of("red skirt", "make it longer, maxi").length == "maxi"  # an explicit length wins


def test_longer_sleeves_step_along_the_sleeves() -> None:
    assert state_of("red t-shirt", "longer sleeves").sleeve == "long"
    assert state_of("red t-shirt", "shorten the sleeves").sleeve == "sleeveless"
    assert state_of("long-sleeved shirt", "make the sleeves shorter").sleeve == "short"
    assert state_of("red dress", "longer sleeves").sleeve == "short"  # from the dress's default: sleeveless
    change = apply_instruction(state_of("red dress"), "shorter sleeves")
    assert change.changed == () and change.ignored_words == ()
    assert "the sleeve is already sleeveless" in change.message


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (("red t-shirt", "make it longer"), "t-shirt: upper garments have no length to change; for sleeves say"),
        (("blue jeans", "longer sleeves"), "jeans: lower garments have no sleeve to change"),
        (("make it red", "longer"), "the garment is not known yet"),
        (("red dress", "undo longer"), "the command 'undo' mixed with changes"),
    ],
)
def test_relative_length_that_cannot_apply_is_refused(texts: tuple[str, ...], message: str) -> None:
    with pytest.raises(InstructionNotUnderstood, match=message):
        state_of(*texts)


# -- commands ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "command"),
    [("undo", "undo"), ("Undo!", "undo"), ("go back", "undo"), ("redo", "redo"), ("reset", "reset"),
     ("start over please", "reset")],
)
def test_commands_leave_the_state_to_the_session(text: str, command: str) -> None:
    state = state_of(BASE)
    change = apply_instruction(state, text)
    assert (change.command, change.changed, change.state) == (command, (), state)
    assert change.message == f"command: {command}"
    assert apply_instruction(None, text).state == GarmentState()


def test_a_command_mixed_with_changes_is_refused() -> None:
    with pytest.raises(InstructionNotUnderstood, match="command 'undo' mixed with changes"):
        apply_instruction(state_of(BASE), "undo and make it blue")
    with pytest.raises(InstructionNotUnderstood, match="several commands"):
        apply_instruction(None, "undo redo")


# -- words not understood --------------------------------------------------------------------------


def test_ignored_words_are_reported() -> None:
    change = apply_instruction(state_of(BASE), "make it red and sparkly with glitter")
    assert change.ignored_words == ("sparkly", "glitter")
    assert change.message == "no change: red cotton t-shirt with white stripes; ignored words: sparkly, glitter"
    change = apply_instruction(None, "ein rotes T-Shirt mit Streifen")
    assert change.state.describe() == "t-shirt"
    assert change.ignored_words == ("ein", "rotes", "mit", "streifen")
    assert "ignored words: ein, rotes, mit, streifen" in change.message


def test_follow_up_words_are_not_reported_as_ignored() -> None:
    change = apply_instruction(state_of(BASE), "please change it to polka dots instead, and get rid of the cotton")
    assert change.ignored_words == ()
    assert change.state.describe() == "red t-shirt with white polka dots"


@pytest.mark.parametrize(("text", "words"), [("make it nicer", ("nicer",)), ("rouge", ("rouge",)), ("make it", ())])
def test_nothing_readable_raises(text: str, words: tuple[str, ...]) -> None:
    with pytest.raises(InstructionNotUnderstood, match="names no garment, colour, pattern") as e:
        apply_instruction(state_of(BASE), text)
    assert e.value.words == words
    assert isinstance(e.value, ValueError)
    for word in words:
        assert word in str(e.value)


def test_removing_the_garment_itself_is_refused() -> None:
    with pytest.raises(InstructionNotUnderstood, match="cannot remove the jacket"):
        apply_instruction(state_of("red jacket"), "no jacket")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="instruction text is empty"):
        apply_instruction(None, "  ")
    with pytest.raises(ValueError, match="expected a GarmentState"):
        apply_instruction("red shirt", "blue")  # type: ignore[arg-type]


def test_notes_say_what_was_not_kept() -> None:
    change = apply_instruction(None, "striped floral silk linen shirt")
    assert change.state.describe() == "striped silk shirt"
    assert "kept striped, not floral" in change.message and "kept silk, not linen" in change.message
    change = apply_instruction(state_of("red shirt"), "remove the blue")
    assert change.changed == () and "no blue to remove" in change.message


# -- describe() --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "text"),
    [
        (GarmentState(), "garment"),
        (GarmentState(colors=("red",)), "red garment"),
        (GarmentState(category="lower", colors=("black",)), "black bottoms"),
        (GarmentState(category="full"), "dress"),
        (GarmentState(category="upper", garment="t-shirt", colors=("red", "white", "blue"), sleeve="short"),
         "red, white and blue t-shirt"),
        (GarmentState(category="upper", garment="shirt", colors=("red", "white"), pattern="striped"),
         "striped red and white shirt"),
        (GarmentState(category="upper", garment="shirt", colors=("red",), pattern="horizontal stripes"),
         "red horizontal-striped shirt"),
        (GarmentState(category="full", garment="dress", colors=("navy",), pattern="floral", pattern_colors=("pink",),
                      sleeve="long", length="maxi", material="silk"),
         "navy long-sleeved maxi silk dress with pink flowers"),
        (GarmentState(category="full", garment="overall", material="denim"), "denim overalls"),
        (GarmentState(category="upper", garment="tank top", sleeve="sleeveless"), "tank top"),  # implied: unsaid
        (GarmentState(category="lower", garment="jeans", length="long"), "jeans"),
    ],
)
def test_describe(state: GarmentState, text: str) -> None:
    assert state.describe() == text == str(state)


def test_describe_reads_back_as_the_same_state_for_every_pattern() -> None:
    for pattern in PATTERNS:
        for pattern_colors in ((), ("white",)) if pattern != "plain" else ((),):
            for colors in ((), ("red",), ("red", "light blue")):
                state = GarmentState(category="upper", garment="shirt", colors=colors, pattern=pattern,
                                     pattern_colors=pattern_colors, sleeve="long", material="linen")
                assert GarmentState.from_instruction(parse_instruction(state.describe())) == state, state.describe()


def test_describe_reads_back_for_every_sleeve_and_length() -> None:
    for sleeve in (None, *SLEEVES):
        for length in (None, *LENGTHS):
            state = GarmentState(category="full", garment="dress", colors=("green",), sleeve=sleeve, length=length)
            assert GarmentState.from_instruction(parse_instruction(state.describe())) == state, state.describe()


def test_first_instruction_agrees_with_parse_instruction() -> None:
    for text in ("striped cotton shirt", "red polka dot dress", "navy blue knee-length skirt", "black tank top",
                 "Long-sleeved floral maxi dresses", "red and white striped shirt", "shirt with blue stripes",
                 "plaid wool coat", "a plain white tee", "blue jeans"):
        assert apply_instruction(None, text).state == GarmentState.from_instruction(parse_instruction(text)), text


def test_describe_tables_cover_the_vocabulary() -> None:
    assert set(PATTERN_FORMS) == set(PATTERNS)
    assert set(SLEEVE_PHRASES) == set(SLEEVES) and set(LENGTH_PHRASES) == set(LENGTHS)
    assert set(CATEGORY_NOUNS) == set(GARMENT_CATEGORIES)


def test_state_validates_its_values() -> None:
    with pytest.raises(ValueError, match="unknown garment 'cape'"):
        GarmentState(garment="cape")
    with pytest.raises(ValueError, match="unknown sleeve 'medium'"):
        GarmentState(sleeve="medium")
    with pytest.raises(ValueError, match="unknown garment category"):
        GarmentState(category="shoes")
    with pytest.raises(ValueError, match="unknown colours \\['rot'\\]"):
        GarmentState(colors=("red", "rot"))
    state = GarmentState(colors=["light blue"], pattern_colors=["white"])  # type: ignore[arg-type]
    assert state.colors == ("light blue",) and state.pattern_colors == ("white",)
    hash(state)  # frozen and hashable: usable as a history key


# -- to_instruction: what masking reads --------------------------------------------------------------


def test_to_instruction_round_trip() -> None:
    for state in (state_of(BASE), state_of("red t-shirt", "sleeveless", "make it a dress", "maxi"), GarmentState()):
        instruction = state.to_instruction()
        assert instruction.text == state.describe()
        assert GarmentState.from_instruction(instruction) == state


@pytest.mark.parametrize(
    ("texts", "regions"),
    [
        (("red shirt", "sleeveless"), ("torso",)),
        (("red shirt", "long sleeves"), ("torso", "upper_arms", "lower_arms")),
        (("red t-shirt",), ("torso", "upper_arms")),
        (("red t-shirt", "make it a tank top"), ("torso",)),
        (("red t-shirt", "make it a dress"), ("torso", "upper_legs")),  # a dress: sleeveless, knee by default
        (("red t-shirt", "make it a dress", "long sleeves", "maxi"),
         ("torso", "upper_arms", "lower_arms", "upper_legs", "lower_legs")),
        (("blue jeans",), ("upper_legs", "lower_legs")),
        (("blue jeans", "make it a skirt"), ("upper_legs",)),
        (("red t-shirt", "make it a coat"), ("torso", "upper_arms", "lower_arms")),
    ],
)
def test_masks_follow_category_sleeve_and_length(texts: tuple[str, ...], regions: tuple[str, ...]) -> None:
    a = state_of(*texts).to_instruction().attributes
    assert covered_regions(state_of(*texts).category, a.sleeve, a.length) == regions


def _striped_parts() -> torch.Tensor:
    """DensePose part maps [1,25,4,50]: channel c owns columns 2c and 2c+1, so each region is known by column."""
    parts = torch.zeros(1, NUM_DENSEPOSE_CHANNELS, 4, 2 * NUM_DENSEPOSE_CHANNELS)
    for c in range(NUM_DENSEPOSE_CHANNELS):
        parts[0, c, :, 2 * c : 2 * c + 2] = 1
    return parts


def _edited_regions(edit: torch.Tensor) -> set[str]:
    return {r for r, channels in BODY_REGIONS.items() if channels and all(edit[0, 0, 0, 2 * c] == 1 for c in channels)}


@pytest.mark.parametrize(
    ("texts", "one_shot"),
    [
        (("red shirt", "sleeveless"), "sleeveless red shirt"),
        (("red shirt", "long sleeves"), "long sleeve red shirt"),
        (("red t-shirt", "add white stripes", "make it a dress", "midi"), "red midi dress with white stripes"),
        (("blue jeans", "make it a skirt", "knee length"), "knee length blue skirt"),
    ],
)
def test_build_masks_of_a_follow_up_equal_those_of_the_one_shot_text(texts: tuple[str, ...], one_shot: str) -> None:
    parts = _striped_parts()
    sizes = {"dilation_px": 0, "feather_px": 0, "close_px": 0, "open_px": 0}
    state = state_of(*texts)
    masks = build_masks(state.to_instruction(), parts=parts, **sizes)
    expected = build_masks(parse_instruction(one_shot), parts=parts, **sizes)
    assert masks.category == expected.category == state.category
    torch.testing.assert_close(masks.edit, expected.edit)
    a = state.to_instruction().attributes
    covered = set(covered_regions(state.category, a.sleeve, a.length))
    assert _edited_regions(masks.edit) == covered  # the state's own masks edit exactly what it covers
