"""Bundles: reading and writing bundle.json, loading every role, clear errors, lazy sha256, random bundles,
and where the demo bundle is found (source tree and installed wheel)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

import ficekit.bundle as bundle_module
from ficekit.bundle import (
    BUNDLE_FILE,
    FORMATS,
    REQUIRED_ROLES,
    Bundle,
    BundleError,
    BundleNotFoundError,
    ChecksumError,
    EditDefaults,
    ModelSpec,
    load_bundle,
    load_model,
    sha256_file,
    write_bundle,
)
from ficekit.checkpoint_io import CheckpointError
from ficekit.encoder import Encoder4Editing
from ficekit.generator import Generator
from ficekit.perception.clip import ClipGuide
from ficekit.perception.densepose import DensePoseChartModel
from ficekit.perception.parser_networks import PARSER_ARCHITECTURES, build_parser_network
from ficekit.perception.segmenter import FiceSegmenter, ParserSegmenterView, SegmentationParser, parser_view_groups
from ficekit.perception.small_unet import SmallUNet
from ficekit.random_bundle import RANDOM_PARSER_LABELS, write_random_bundle
from tests.parity import REPO_ROOT, parity_dir

FICE_WEIGHTS = {"clip": 1.0, "img": 30.0, "shape": 10.0, "head_shape": 1.0, "w_delta": 1.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Bundle, bool]:
    """The 'tiny' random bundle, and whether writing it left the global RNG state as it was."""
    before = torch.get_rng_state()
    bundle = write_random_bundle(tmp_path_factory.mktemp("tiny") / "bundle", "tiny", seed=0)
    return bundle, torch.equal(before, torch.get_rng_state())


@pytest.fixture
def tiny_bundle(tiny: tuple[Bundle, bool]) -> Bundle:
    return tiny[0]


def _copy_json(bundle: Bundle, folder: Path, edit=None) -> Path:
    """bundle.json of `bundle` with absolute model paths (no copying of weights), edited, in `folder`."""
    data = bundle.to_dict()
    for role, entry in data["models"].items():
        entry["file"] = str(bundle.path(role))
    data["example_images"] = [str(p) for p in bundle.example_images]
    if edit is not None:
        edit(data)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / BUNDLE_FILE).write_text(json.dumps(data))
    return folder


# ---------------------------------------------------------------------------------------------------
# The tiny random bundle: every role loads, frozen, and the parts fit together.


def test_random_tiny_bundle_loads_every_role(tiny_bundle: Bundle) -> None:
    b = load_bundle(tiny_bundle.root)
    assert b == tiny_bundle and b.name == "random-tiny"
    assert all(b.has(role) for role in (*REQUIRED_ROLES, "parser"))
    expected = {
        "generator": Generator, "encoder": Encoder4Editing, "densepose": DensePoseChartModel,
        "segmenter": FiceSegmenter, "parser": SegmentationParser, "clip": ClipGuide,
    }  # fmt: skip
    modules = {role: b.load(role) for role in expected}
    for role, module in modules.items():
        assert isinstance(module, expected[role]), role
        assert not module.training, role
        assert not any(p.requires_grad for p in module.parameters()), role

    G, E = modules["generator"], modules["encoder"]
    assert (G.img_resolution, G.num_ws, G.w_dim) == (32, E.num_ws, E.w_dim)
    torch.testing.assert_close(E.latent_avg[0, 0], G.mapping.w_avg)  # e4e starts from the generator's mean w
    image = torch.rand(2, 3, 32, 32, requires_grad=True)
    ws = E(image)
    assert ws.shape == (2, G.num_ws, G.w_dim)
    assert G.synthesis(ws).shape == (2, 3, 32, 32)
    assert modules["densepose"](image).body_parts().shape[:2] == (2, 14)
    assert modules["segmenter"](image).head.shape == (2, 1, 32, 32)
    masks = modules["parser"](image)
    assert set(masks) == set(RANDOM_PARSER_LABELS) | {"garments"}
    loss = modules["clip"].clip_loss(image, ["a red striped shirt"])
    loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_random_bundle_record(tiny: tuple[Bundle, bool]) -> None:
    b, rng_untouched = tiny
    assert rng_untouched
    assert b.defaults == EditDefaults() and b.defaults.weights == FICE_WEIGHTS
    assert (b.defaults.iterations, b.defaults.lr, b.defaults.stitch, b.defaults.mask) == (500, 0.05, "fice", "fice")
    assert b.provenance["preset"] == "tiny" and b.provenance["seed"] == 0
    assert b.models["generator"].format == "fice" and b.models["densepose"].kwargs["config"]["depth"] == 18
    for role, spec in b.models.items():
        assert spec.sha256 == sha256_file(b.path(role)), role
    (image,) = b.example_images
    with Image.open(image) as im:
        assert im.size == (256, 256) and im.mode == "RGB"
    on_disk = json.loads((b.root / BUNDLE_FILE).read_text())
    assert on_disk == b.to_dict()
    assert on_disk["models"]["encoder"]["file"] == "e4e.pt"  # paths are stored relative to the folder
    assert load_bundle(b.root / BUNDLE_FILE) == b  # a bundle.json path works too
    assert not [p for p in b.root.iterdir() if ".tmp" in p.name]


def test_write_random_bundle_replaces_nothing(tiny_bundle: Bundle) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in tiny_bundle.root.iterdir()}
    with pytest.raises(FileExistsError, match="replaces nothing"):
        write_random_bundle(tiny_bundle.root, "tiny")
    assert {p.name: p.stat().st_mtime_ns for p in tiny_bundle.root.iterdir()} == before
    with pytest.raises(ValueError, match="preset"):
        write_random_bundle(tiny_bundle.root.parent / "other", "huge")


# ---------------------------------------------------------------------------------------------------
# Names and locations.


def test_unknown_name_lists_known_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BundleNotFoundError, match=r"unknown bundle 'fancy'.*\['demo', 'fice'\].*path"):
        load_bundle("fancy")
    with pytest.raises(BundleNotFoundError, match="bundle folder not found"):
        load_bundle(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleNotFoundError, match=f"without a {BUNDLE_FILE}"):
        load_bundle(tmp_path / "empty")


def test_fice_name_reads_ficekit_home(tiny_bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FICEKIT_HOME", str(tmp_path / "home"))
    with pytest.raises(BundleNotFoundError, match="python -m ficekit.download fice`"):
        load_bundle("fice")
    (tmp_path / "home" / "fice").mkdir(parents=True)
    (tmp_path / "home" / "fice" / "generator.pt").write_bytes(b"partial")
    with pytest.raises(BundleNotFoundError, match="download fice --force.*unfinished download"):
        load_bundle("fice")
    _copy_json(tiny_bundle, tmp_path / "home" / "fice")
    b = load_bundle("fice")
    assert b.root == (tmp_path / "home" / "fice").resolve()
    assert b.path("generator") == tiny_bundle.path("generator")  # absolute model paths are kept


def test_demo_bundle_in_this_checkout() -> None:
    demo = REPO_ROOT / "checkpoints" / "demo"
    if (demo / BUNDLE_FILE).is_file():
        b = load_bundle("demo")
        assert b.root == demo.resolve()
        assert all(b.path(role) is None or b.path(role).is_file() for role in b.models)
    else:
        with pytest.raises(BundleNotFoundError, match="demo bundle is not in this installation"):
            load_bundle("demo")


def _fake_demo(src: Path) -> None:
    demo = src / "checkpoints" / "demo"
    (demo / "examples").mkdir(parents=True)
    models = {
        "generator": {"file": "generator.pt", "format": "fice"},
        "encoder": {"file": "e4e.pt", "format": "e4e"},
        "densepose": {"file": "densepose.pkl", "format": "detectron2", "kwargs": {"config": "R_50_FPN_s1x"}},
        "segmenter": {"file": "segmentator.pt", "format": "fice_deeplab"},
        "clip": {"file": "weights/clip.pt", "format": "open_clip", "kwargs": {"model_name": "RN50x4"}},
    }
    (demo / "weights").mkdir()
    for entry in models.values():
        (demo / entry["file"]).write_bytes(b"not loaded by this test")
    (demo / "examples" / "person.png").write_bytes(b"png")
    data = {"format_version": 1, "name": "demo", "models": models, "example_images": ["examples/person.png"]}
    (demo / BUNDLE_FILE).write_text(json.dumps(data))


def test_demo_bundle_found_from_checkout_and_from_wheel(tmp_path: Path) -> None:
    """In a copy of the repository: without checkpoints/demo the wheel has no data package; with a fake one the
    wheel ships it as ficekit_checkpoints/demo, and load_bundle('demo') finds it both when ficekit is imported
    from the source tree (editable install / checkout) and from the installed wheel."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (no build isolation here)")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    for package in ("ficekit", "stylegan2_ops"):
        shutil.copytree(REPO_ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "build"))

    def build_wheel(out: Path) -> set[str]:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-q",
             "-w", str(out)],
            cwd=src, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        (built,) = out.glob("ficekit-*.whl")
        return set(zipfile.ZipFile(built).namelist())

    assert not any(n.startswith("ficekit_checkpoints/") for n in build_wheel(tmp_path / "plain"))  # no demo: no data
    _fake_demo(src)
    shutil.rmtree(src / "build", ignore_errors=True)
    wheels = tmp_path / "wheels"
    names = build_wheel(wheels)
    (wheel,) = wheels.glob("ficekit-*.whl")
    demo_files = {
        "ficekit_checkpoints/demo/bundle.json", "ficekit_checkpoints/demo/generator.pt",
        "ficekit_checkpoints/demo/weights/clip.pt", "ficekit_checkpoints/demo/examples/person.png",
    }  # fmt: skip
    assert demo_files <= names, sorted(n for n in names if "checkpoints" in n)
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:  # a wheel installs by unpacking it into site-packages
        zf.extractall(site)

    probe = textwrap.dedent("""
        import ficekit, ficekit.bundle as b
        x = b.load_bundle("demo")
        print(ficekit.__file__, x.root, x.path("clip"), sep="\\n")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for where, expected in ((site, site / "ficekit_checkpoints" / "demo"), (src, src / "checkpoints" / "demo")):
        out = subprocess.run(
            [sys.executable, "-c", probe], cwd=tmp_path, env={**env, "PYTHONPATH": str(where)},
            check=True, capture_output=True, text=True, timeout=120,
        ).stdout.split("\n")  # fmt: skip
        assert Path(out[0]).is_relative_to(where), out
        assert Path(out[1]) == expected.resolve()
        assert Path(out[2]) == expected.resolve() / "weights" / "clip.pt"


# ---------------------------------------------------------------------------------------------------
# Errors in bundle.json.


def _edited(tiny_bundle: Bundle, tmp_path: Path, edit) -> Path:
    return _copy_json(tiny_bundle, tmp_path / "edited", edit)


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda d: d["models"].update(shoes=d["models"]["generator"]), BundleError, r"unknown model role 'shoes'.*known roles"),
        (lambda d: d["models"]["generator"].update(format="onnx"), BundleError, r"unknown format 'onnx'.*\['fice', 'nvlabs', 'rosinality'\]"),
        (lambda d: d["models"].pop("encoder"), BundleError, r"no model for role\(s\) \['encoder'\]"),
        (lambda d: d["models"]["densepose"].update(kwargs={}), BundleError, r"densepose \(detectron2\): kwargs missing \['config'\]"),
        (lambda d: d["models"]["densepose"].update(kwargs={"config": "R_77"}), BundleError, "unknown DensePose config"),
        (lambda d: d["models"]["generator"].update(kwargs={"channels": 3}), BundleError, r"unknown \['channels'\]"),
        (lambda d: d["models"]["parser"]["kwargs"].update(architecture={"type": "unet"}), BundleError, "lraspp_mobilenet_v3_large"),
        (lambda d: d["models"]["parser"]["kwargs"].update(input_kind="bgr"), BundleError, "input_kind"),
        (lambda d: d["models"]["encoder"].update(file=None), BundleError, "'file' is null"),
        (lambda d: d["models"]["clip"]["kwargs"].update(pretrained="openai"), BundleError, "not both"),
        (lambda d: d["models"]["encoder"].update(sha256="abc"), BundleError, "64 lower-case hex"),
        (lambda d: d["models"]["clip"].update(sha256=None, kwargs={**d["models"]["clip"]["kwargs"], "trust_torchscript": True}), BundleError, "trust_torchscript .* needs the file's sha256"),
        (lambda d: d["models"]["encoder"].update(weights="x"), BundleError, "expected keys"),
        (lambda d: d.update(format_version=2), BundleError, "format_version is 2"),
        (lambda d: d.update(extra=1), BundleError, r"unknown key\(s\) \['extra'\]"),
        (lambda d: d["defaults"].update(stitch="poisson"), BundleError, "defaults.stitch"),
        (lambda d: d["defaults"].update(iterations=0), BundleError, "defaults.iterations"),
        (lambda d: d["defaults"].update(steps=3), BundleError, r"unknown key\(s\) \['steps'\]"),
        (lambda d: d["models"]["segmenter"].update(file="/nonexistent/seg.pt"), BundleNotFoundError, r"segmenter model file /nonexistent/seg.pt does not exist"),
        (lambda d: d.update(example_images=["/nonexistent/a.png"]), BundleNotFoundError, "example image"),
    ],
)  # fmt: skip
def test_bad_bundle_json(tiny_bundle: Bundle, tmp_path: Path, edit, error: type, match: str) -> None:
    folder = _edited(tiny_bundle, tmp_path, edit)
    with pytest.raises(error, match=match) as info:
        load_bundle(folder)
    assert str(folder / BUNDLE_FILE) in str(info.value)  # every message names the bundle.json


def test_malformed_json(tmp_path: Path) -> None:
    (tmp_path / BUNDLE_FILE).write_text('{"format_version": 1,\n "models": {,}}')
    with pytest.raises(BundleError, match=r"not valid JSON: .* line 2, column 13"):
        load_bundle(tmp_path)
    (tmp_path / BUNDLE_FILE).write_text("[1, 2]")
    with pytest.raises(BundleError, match="expected a JSON object"):
        load_bundle(tmp_path)


def test_clip_by_pretrained_tag_has_no_file(tiny_bundle: Bundle, tmp_path: Path) -> None:
    def tag(d: dict) -> None:
        d["models"]["clip"] = {
            "file": None,
            "format": "open_clip",
            "kwargs": {"model_name": "RN50x4", "pretrained": "openai"},
        }

    b = load_bundle(_edited(tiny_bundle, tmp_path, tag))
    assert b.path("clip") is None and b.models["clip"].kwargs["pretrained"] == "openai"


def test_missing_role_and_missing_file_at_load_time(tiny_bundle: Bundle, tmp_path: Path) -> None:
    b = load_bundle(_edited(tiny_bundle, tmp_path, lambda d: d["models"].pop("parser")))
    assert not b.has("parser") and b.has("segmenter")
    with pytest.raises(BundleError, match=r"has no 'parser' model; it has \["):
        b.load("parser")
    minimal = load_bundle(
        _copy_json(b, tmp_path / "min", lambda d: [d["models"].pop(r) for r in ("densepose", "segmenter")])
    )
    assert sorted(minimal.models) == ["clip", "encoder", "generator"]
    with pytest.raises(BundleNotFoundError, match="encoder model file .* does not exist"):
        load_model("encoder", ModelSpec("gone.pt", "e4e"), tmp_path)


# ---------------------------------------------------------------------------------------------------
# sha256: checked lazily when a model loads, and remembered.


def test_sha256_checked_lazily_and_cached(tiny_bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(tiny_bundle.root, folder)
    b = load_bundle(folder)
    calls: list[Path] = []
    real = bundle_module.sha256_file
    monkeypatch.setattr(bundle_module, "sha256_file", lambda p, *a: calls.append(Path(p)) or real(p, *a))
    b.load("generator")
    b.load("generator")
    assert calls == [folder.resolve() / "generator.pt"]  # hashed once

    data = bytearray((folder / "generator.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    (folder / "generator.pt").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"generator model file .*generator.pt has sha256 [0-9a-f]{64}, but"):
        b.load("generator")  # the changed file is hashed again
    fresh = load_bundle(folder)  # reading the bundle does not hash anything
    with pytest.raises(ChecksumError):
        fresh.load("generator")
    assert isinstance(
        load_model("generator", dataclasses.replace(b.models["generator"], sha256=None), folder), Generator
    )


def test_bad_model_file_raises_checkpoint_error(tiny_bundle: Bundle, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    shutil.copy2(tiny_bundle.path("segmenter"), folder / "seg.pt")
    with pytest.raises(CheckpointError, match="seg.pt"):  # a 3-class LR-ASPP file is not FICE's DeepLabV3
        load_model("segmenter", ModelSpec("seg.pt", "fice_deeplab"), folder)


# ---------------------------------------------------------------------------------------------------
# Writing.


def test_write_bundle_validates_and_refuses_to_overwrite(tiny_bundle: Bundle, tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    for role in tiny_bundle.models:
        shutil.copy2(tiny_bundle.path(role), folder / tiny_bundle.models[role].file)
    bad = dict(tiny_bundle.models, encoder=ModelSpec("e4e.pt", "psp"))
    with pytest.raises(BundleError, match="unknown format 'psp'"):
        write_bundle(folder, bad)
    assert not (folder / BUNDLE_FILE).exists()  # nothing written for an invalid record

    defaults = EditDefaults(iterations=20, weights={"clip": 2.0}, stitch="feather", followup_iterations=7)
    b = write_bundle(folder, tiny_bundle.models, defaults, {"note": "copy"}, name="mine")
    assert (b.name, b.defaults, b.provenance, b.example_images) == ("mine", defaults, {"note": "copy"}, [])
    assert load_bundle(folder) == b
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_bundle(folder, tiny_bundle.models)
    assert load_bundle(folder).name == "mine"
    assert write_bundle(folder, tiny_bundle.models, overwrite=True).defaults == EditDefaults()
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_edit_defaults_from_dict() -> None:
    d = EditDefaults.from_dict({"iterations": 10, "weights": {"clip": 1, "img": 5}})
    assert d.iterations == 10 and d.weights == {"clip": 1.0, "img": 5.0} and d.lr == 0.05
    assert EditDefaults.from_dict(d.to_dict()) == d
    with pytest.raises(ValueError, match="unknown key"):
        EditDefaults.from_dict({"lr_schedule": "cosine"})
    with pytest.raises(ValueError, match="defaults.lr"):
        EditDefaults(lr=-1)
    with pytest.raises(ValueError, match="defaults.weights"):
        EditDefaults(weights={"clip": -1.0})
    assert EditDefaults().clip_augment == 0  # FICE's plain CLIP term unless a bundle asks for views
    assert EditDefaults.from_dict({"clip_augment": 4}).clip_augment == 4
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="defaults.clip_augment"):
            EditDefaults(clip_augment=bad)


def test_edit_defaults_follow_edit_settings_rules() -> None:
    """One set of rules: the bundle's defaults are refused exactly when the same EditSettings would be."""
    assert EditDefaults.from_dict({"resolution": None}) == EditDefaults()  # older bundles wrote null
    with pytest.raises(ValueError, match="defaults.resolution"):
        EditDefaults.from_dict({"resolution": 100000})  # was accepted and ignored
    for bad in ({"lr": float("inf")}, {"iterations": 10**9}, {"inversion": "gan"}, {"mask": "magic"},
                {"followup_iterations": 0}, {"clip_augment": 100000}):
        with pytest.raises(ValueError, match="defaults."):
            EditDefaults(**bad)
    assert EditDefaults(inversion="pti", inversion_steps=50).inversion_steps == 50


def test_parser_architectures() -> None:
    assert set(PARSER_ARCHITECTURES) == {
        "deeplabv3_resnet50", "lraspp_mobilenet_v3_large", "fcn_resnet50", "small_unet"
    }  # fmt: skip
    net = build_parser_network({"type": "fcn_resnet50", "aux_loss": True}, num_classes=5)
    assert net.classifier[-1].out_channels == 5 and net.aux_classifier is not None
    with pytest.raises(
        ValueError, match=r"cannot be built: fcn_resnet50 takes the option\(s\) \['aux_loss'\], got \['weights'\]"
    ):
        build_parser_network({"type": "fcn_resnet50", "weights": "DEFAULT"}, num_classes=5)  # would download
    with pytest.raises(ValueError, match="deeplabv3_resnet50"):
        build_parser_network({"kind": "unet"}, num_classes=5)
    assert FORMATS["parser"] == ("parser",) and FORMATS["segmenter"] == ("fice_deeplab", "parser_view")
    unet = build_parser_network({"type": "small_unet", "base_channels": 8, "depth": 2}, num_classes=4)
    assert isinstance(unet, SmallUNet) and unet(torch.rand(1, 3, 10, 12)).shape == (1, 4, 10, 12)


def _parser_view_record(d: dict) -> None:
    """Replace the segmenter record by FICE's classes read off the bundle's parser (its file and kwargs)."""
    parser = d["models"]["parser"]
    d["models"]["segmenter"] = {
        "file": parser["file"],
        "format": "parser_view",
        "kwargs": {"parser": parser["kwargs"], "groups": parser_view_groups(RANDOM_PARSER_LABELS)},
        "sha256": parser["sha256"],
    }


def test_parser_view_segmenter_format(tiny_bundle: Bundle, tmp_path: Path) -> None:
    b = load_bundle(_copy_json(tiny_bundle, tmp_path / "view", _parser_view_record))
    assert b.spec("segmenter").kwargs["groups"]["head"] == ["head", "hair"]
    view, parser = b.load("segmenter"), b.load("parser")
    assert isinstance(view, ParserSegmenterView) and not view.training
    assert not any(p.requires_grad for p in view.parameters())
    x = torch.rand(2, 3, 32, 32)
    fice, masks = view(x), parser(x)
    assert fice.probs.shape == (2, 3, 32, 32)
    assert torch.equal(fice.head, masks.merge("head", "hair"))
    torch.testing.assert_close(fice.probs.sum(dim=1), torch.ones(2, 32, 32))
    # load_model reads the record on its own (no bundle), as the trainers do
    alone = load_model("segmenter", b.spec("segmenter"), b.root)
    assert torch.equal(alone(x).probs, fice.probs)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda k: k.pop("groups"), r"segmenter \(parser_view\): kwargs missing \['groups'\]"),
        (lambda k: k["groups"]["body"].remove("shoes"), r"\['shoes'\] are in no group"),
        (lambda k: k["groups"].update(person=["arms"]), "exactly the keys"),
        (lambda k: k["parser"].pop("architecture"), r"parser: kwargs missing \['architecture'\]"),
        (lambda k: k["parser"].update(normalise=True), r"parser: kwargs unknown \['normalise'\]"),
        (lambda k: k["parser"]["architecture"].update(type="unet"), "architecture must be a dict"),
        (lambda k: k.update(parser="parser"), "parser must be the parser record's kwargs"),
    ],
)  # fmt: skip
def test_bad_parser_view_record(tiny_bundle: Bundle, tmp_path: Path, edit, match: str) -> None:
    def record(d: dict) -> None:
        _parser_view_record(d)
        d["models"]["segmenter"]["kwargs"] = json.loads(json.dumps(d["models"]["segmenter"]["kwargs"]))
        edit(d["models"]["segmenter"]["kwargs"])

    with pytest.raises(BundleError, match=match):
        load_bundle(_edited(tiny_bundle, tmp_path, record))


def test_nvlabs_generator_format(tmp_path: Path) -> None:
    pkl = parity_dir() / "stylegan2_tiny.pkl"
    if not pkl.is_file():
        pytest.skip(f"parity fixture {pkl} is absent")
    G = load_model("generator", ModelSpec(str(pkl), "nvlabs", {"network": "G_ema"}), tmp_path)
    assert isinstance(G, Generator) and G.img_resolution == 32


@pytest.mark.slow
def test_random_fice_bundle(tmp_path: Path) -> None:
    """FICE-size architectures (about 2 GB written, ~40 s on 2 CPU cores)."""
    b = write_random_bundle(tmp_path / "fice", "fice")
    assert b.models["densepose"].kwargs == {"config": "R_50_FPN_s1x"} and b.models["segmenter"].kwargs == {}
    G = b.load("generator")
    assert (G.img_resolution, G.num_ws) == (256, 14)
    assert G.init_kwargs["synthesis_kwargs"] == {
        "channel_base": 16384,
        "channel_max": 512,
        "num_fp16_res": 4,
        "conv_clamp": 256,
    }
    image = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert b.load("encoder")(image).shape == (1, 14, 512)
        assert b.load("densepose")(image).body_parts().shape == (1, 14, 112, 112)
        assert b.load("segmenter")(image).head.shape == (1, 1, 256, 256)
        assert b.load("parser")(image)["head"].shape == (1, 1, 256, 256)
        clip = b.load("clip")
        assert clip.model.visual.image_size == 288 and clip.clip_loss(image, ["a shirt"]).ndim == 0
