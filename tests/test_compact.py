"""Float16 storage of trained bundle files: only float32 tensors change, and the loaders read the result."""

import torch

from ficekit.encoder import Encoder4Editing, load_e4e, save_e4e
from ficekit.generator import Generator, load_generator, save_generator
from ficekit.synthetic.compact import compact_checkpoint, half_precision


def test_half_precision_casts_only_float32_tensors():
    obj = {"a": torch.ones(2), "b": [torch.arange(3), (torch.ones(1, dtype=torch.float64), "x")], "c": 1.5}
    out = half_precision(obj)
    assert out["a"].dtype == torch.float16
    assert out["b"][0].dtype == torch.int64 and out["b"][1][0].dtype == torch.float64
    assert out["b"][1][1] == "x" and out["c"] == 1.5


def test_compacted_files_load_and_give_nearly_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 1},
                  synthesis_kwargs={"channel_base": 128, "channel_max": 16}).eval()  # fmt: skip
    save_generator(G, tmp_path / "generator.pt")
    E = Encoder4Editing(gan_size=16, units=[1, 1, 1, 1], channels=[16, 16, 16, 16], w_dim=16, input_size=32).eval()
    save_e4e(E, tmp_path / "e4e.pt")
    z, x = torch.randn(2, 16), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        img_before, ws_before = G(z, noise_mode="const"), E(x)
    for name in ("generator.pt", "e4e.pt"):
        before, after = compact_checkpoint(tmp_path / name)
        assert after < 0.7 * before
    G2, E2 = load_generator(tmp_path / "generator.pt"), load_e4e(tmp_path / "e4e.pt")
    assert next(G2.parameters()).dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(G2(z, noise_mode="const"), img_before, atol=2e-2, rtol=0)
        torch.testing.assert_close(E2(x), ws_before, atol=2e-2, rtol=0)


def test_half_precision_keeps_tensors_beyond_float16_range_in_float32():
    big = torch.tensor([1.0, 7.0e4])  # 7e4 > 65504 would become inf in float16
    odd = torch.tensor([1.0, float("inf")])
    out = half_precision({"big": big, "odd": odd, "edge": torch.tensor([-65504.0, 0.5]), "empty": torch.ones(0)})
    assert out["big"].dtype == torch.float32 and torch.equal(out["big"], big)
    assert out["odd"].dtype == torch.float32
    assert out["edge"].dtype == torch.float16 and torch.isfinite(out["edge"]).all()
    assert out["empty"].dtype == torch.float16


def test_compacted_encoder_with_large_batchnorm_statistics_keeps_them(tmp_path):
    # A layer whose weights grew gets BatchNorm running_var beyond float16's range; cast, it was inf and the
    # eval-mode encoder silently zeroed those channels (the demo bundle once shipped such a file).
    torch.manual_seed(0)
    E = Encoder4Editing(gan_size=16, units=[1, 1, 1, 1], channels=[16, 16, 16, 16], w_dim=16, input_size=32).eval()
    bn = next(m for m in E.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_var.mul_(1.0e5)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = E(x)
    save_e4e(E, tmp_path / "e4e.pt")
    compact_checkpoint(tmp_path / "e4e.pt")
    E2 = load_e4e(tmp_path / "e4e.pt")
    bn2 = next(m for m in E2.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.isfinite(bn2.running_var).all()
    torch.testing.assert_close(bn2.running_var, bn.running_var)
    with torch.no_grad():
        torch.testing.assert_close(E2(x), expected, atol=2e-2, rtol=0)
