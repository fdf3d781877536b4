"""Reference path of bias_act and upfirdn2d (the spec), on the CPU: hand-computed cases and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stylegan2_ops import bias_act, downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d
from stylegan2_ops.bias_act import activation_funcs

SQRT2 = math.sqrt(2)
SELU_SCALE, SELU_ALPHA = 1.0507009873554804, 1.6732632423543772
XS = [-3.0, -0.5, 0.25, 2.0]


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


# Each activation by its textbook formula, with NVlabs' default gain.
HAND: dict[str, object] = {
    "linear": lambda v: v,
    "relu": lambda v: max(v, 0.0) * SQRT2,
    "lrelu": lambda v: (v if v > 0 else 0.2 * v) * SQRT2,
    "tanh": math.tanh,
    "sigmoid": _sigmoid,
    "elu": lambda v: v if v > 0 else math.exp(v) - 1,
    "selu": lambda v: SELU_SCALE * (v if v > 0 else SELU_ALPHA * (math.exp(v) - 1)),
    "softplus": lambda v: math.log1p(math.exp(v)),
    "swish": lambda v: v * _sigmoid(v) * SQRT2,
}


# ------------------------------------------------------------------------------------------------
# bias_act.


def test_activation_defaults_follow_nvlabs() -> None:
    expected = {name: (0.0, 1.0) for name in HAND}
    expected.update({"lrelu": (0.2, SQRT2), "relu": (0.0, SQRT2), "swish": (0.0, SQRT2)})
    assert set(activation_funcs) == set(HAND)
    for name, (alpha, gain) in expected.items():
        spec = activation_funcs[name]
        assert (spec.def_alpha, spec.def_gain) == pytest.approx((alpha, gain)), name


@pytest.mark.parametrize("act", sorted(HAND))
def test_bias_act_hand_values(act: str) -> None:
    x = torch.tensor([XS], dtype=torch.float64)  # [1, 4]
    b = torch.tensor([0.5, -0.25, 1.0, -1.5], dtype=torch.float64)  # along dim 1
    y = bias_act(x, b, act=act, impl="ref")
    expected = torch.tensor([[HAND[act](v + bv) for v, bv in zip(XS, b.tolist(), strict=True)]], dtype=torch.float64)
    torch.testing.assert_close(y, expected)


def test_bias_act_known_numbers() -> None:
    x = torch.tensor([-1.0, 0.0, 1.0])
    torch.testing.assert_close(bias_act(x, dim=0, act="lrelu"), torch.tensor([-0.28284271, 0.0, 1.41421356]))
    torch.testing.assert_close(bias_act(x, dim=0, act="relu", gain=1), torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(bias_act(x, dim=0, act="lrelu", alpha=0.5, gain=2), torch.tensor([-1.0, 0.0, 2.0]))


def test_bias_act_clamp_after_gain() -> None:
    x = torch.tensor([[-2.0, -0.5, 0.3, 0.8, 5.0]])
    y = bias_act(x, act="lrelu", clamp=1.0)  # lrelu(x) * sqrt2, then clamped to [-1, 1]
    expected = torch.tensor([[-0.4 * SQRT2, -0.1 * SQRT2, 0.3 * SQRT2, 1.0, 1.0]])
    torch.testing.assert_close(y, expected)
    y = bias_act(x, act="linear", clamp=0.4)
    torch.testing.assert_close(y, torch.tensor([[-0.4, -0.4, 0.3, 0.4, 0.4]]))


def test_bias_act_dim() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([2, 3, 4], generator=gen)
    b = torch.randn([4], generator=gen)
    torch.testing.assert_close(bias_act(x, b, dim=2), x + b[None, None, :])
    b0 = torch.randn([2], generator=gen)
    torch.testing.assert_close(bias_act(x, b0, dim=0, act="tanh"), torch.tanh(x + b0[:, None, None]))


def test_bias_act_bad_arguments() -> None:
    x = torch.randn([2, 3])
    with pytest.raises(ValueError, match="unknown activation"):
        bias_act(x, act="gelu")
    with pytest.raises(ValueError, match="b must be 1-D"):
        bias_act(x, torch.zeros(4))
    with pytest.raises(ValueError, match="b must be 1-D"):
        bias_act(x, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="b must be 1-D"):
        bias_act(x, torch.zeros(3), dim=2)
    with pytest.raises(ValueError, match="must match"):
        bias_act(x, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="floating-point"):
        bias_act(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="impl must be one of"):
        bias_act(x, impl="fast")
    with pytest.raises(ValueError, match="needs a CUDA tensor"):
        bias_act(x, impl="cuda")


@pytest.mark.parametrize("act", sorted(HAND))
def test_bias_act_gradcheck(act: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn([2, 3, 2], generator=gen, dtype=torch.float64) * 2).requires_grad_()
    b = torch.randn([3], generator=gen, dtype=torch.float64).requires_grad_()

    def fn(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return bias_act(x, b, act=act, clamp=2.5, impl="ref")

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bias_act_float16_cpu() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn([4, 5], generator=gen)
    b = torch.randn([5], generator=gen)
    for act in HAND:
        try:
            y16 = bias_act(x.half(), b.half(), act=act, clamp=3.0)
        except RuntimeError as e:  # some torch builds lack CPU half kernels
            pytest.skip(f"torch has no CPU float16 kernel for {act}: {e}")
        assert y16.dtype == torch.float16
        torch.testing.assert_close(y16.float(), bias_act(x, b, act=act, clamp=3.0), rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------------------------------------
# upfirdn2d.


def _image(shape: list[int], seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_identity_filter() -> None:
    x = _image([2, 3, 5, 4])
    torch.testing.assert_close(upfirdn2d(x, None), x)
    torch.testing.assert_close(upfirdn2d(x, torch.ones([1, 1])), x)
    torch.testing.assert_close(upfirdn2d(x, torch.ones([1])), x)
    torch.testing.assert_close(upfirdn2d(x, None, gain=3), 3 * x)


def test_upsample_by_zero_insertion() -> None:
    x = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    y = upfirdn2d(x, None, up=[2, 1])
    torch.testing.assert_close(y, torch.tensor([[[[1.0, 0.0, 2.0, 0.0, 3.0, 0.0]]]]))
    # With a [1, 1] filter and one pixel of leading padding, zero insertion becomes pixel repetition.
    y = upfirdn2d(x, torch.ones([1, 2]), up=[2, 1], padding=[1, 0, 0, 0])
    torch.testing.assert_close(y, torch.tensor([[[[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]]]]))


def test_downsample_keeps_every_other_pixel() -> None:
    x = _image([1, 2, 7, 6])
    torch.testing.assert_close(upfirdn2d(x, None, down=2), x[:, :, ::2, ::2])
    torch.testing.assert_close(upfirdn2d(x, None, down=[3, 1]), x[:, :, :, ::3])


def test_negative_padding_crops() -> None:
    x = _image([1, 2, 7, 6])
    torch.testing.assert_close(upfirdn2d(x, None, padding=[-1, -2, -3, 0]), x[:, :, 3:, 1:-2])
    y = upfirdn2d(x, None, padding=[2, -1, -1, 1])  # mixed: pad left/bottom, crop right/top
    torch.testing.assert_close(y[:, :, :-1, 2:], x[:, :, 1:, :-1])
    assert (y[:, :, :, :2] == 0).all() and (y[:, :, -1] == 0).all()


def test_filter_on_a_delta() -> None:
    """Convolving a delta gives the filter itself; correlating it gives the filter flipped."""
    f = torch.arange(1.0, 13.0).reshape(3, 4)  # asymmetric, non-square
    delta = torch.ones([1, 1, 1, 1])
    pad = [3, 3, 2, 2]  # full convolution: fw - 1 and fh - 1 on each side
    torch.testing.assert_close(upfirdn2d(delta, f, padding=pad)[0, 0], f)
    torch.testing.assert_close(upfirdn2d(delta, f, padding=pad, flip_filter=True)[0, 0], f.flip([0, 1]))
    torch.testing.assert_close(upfirdn2d(delta, f, padding=pad, gain=2)[0, 0], 2 * f)


def test_separable_equals_outer_product() -> None:
    f1 = torch.tensor([1.0, 3.0, 2.0, 0.5])
    x = _image([2, 3, 6, 7])
    for up, down, pad, flip in ((1, 1, 1, False), (2, 1, [2, 1, 1, 2], True), (1, 2, [1, 2, -1, 0], False)):
        a = upfirdn2d(x, f1, up=up, down=down, padding=pad, flip_filter=flip, gain=2.5)
        b = upfirdn2d(x, torch.outer(f1, f1), up=up, down=down, padding=pad, flip_filter=flip, gain=2.5)
        torch.testing.assert_close(a, b)


def test_setup_filter() -> None:
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    f8 = setup_filter([1, 2, 3, 4, 4, 3, 2, 1])
    assert f8.shape == (8,) and math.isclose(f8.sum().item(), 1.0, rel_tol=1e-6)
    torch.testing.assert_close(setup_filter([1, 3, 3, 1], gain=4).sum(), torch.tensor(4.0))
    with pytest.raises(ValueError):
        setup_filter(torch.ones(2, 2, 2))


@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 4, 6, 6, 4, 2, 1], [1, 1]])
def test_resampling_sizes_and_dc_gain(taps: list[int]) -> None:
    """A constant image stays constant away from the borders, and the sizes are as documented."""
    f = setup_filter(taps)
    x = torch.full([1, 2, 12, 10], 0.7)
    up = upsample2d(x, f)
    assert up.shape == (1, 2, 24, 20)
    m = len(taps)
    torch.testing.assert_close(up[:, :, m:-m, m:-m], torch.full_like(up[:, :, m:-m, m:-m], 0.7))
    down = downsample2d(x, f)
    assert down.shape == (1, 2, 6, 5)
    k = m // 2
    torch.testing.assert_close(down[:, :, k:-k, k:-k], torch.full_like(down[:, :, k:-k, k:-k], 0.7))
    same = filter2d(x, f)
    assert same.shape == x.shape
    torch.testing.assert_close(same[:, :, m:-m, m:-m], torch.full_like(same[:, :, m:-m, m:-m], 0.7))
    assert downsample2d(torch.zeros([1, 1, 9, 7]), f).shape == (1, 1, 4, 3)  # odd sizes round down
    assert upsample2d(torch.zeros([1, 1, 3, 5]), f, up=[2, 3]).shape == (1, 1, 9, 10)


def test_upfirdn2d_gradcheck() -> None:
    x = _image([1, 2, 5, 4], dtype=torch.float64).requires_grad_()
    for f, up, down, pad in (
        (torch.rand([3, 2], generator=torch.Generator().manual_seed(3)), 2, 1, [1, 2, -1, 2]),
        (torch.tensor([1.0, 2.0, 0.5]), 1, 2, [2, 1, 1, 0]),
    ):

        def fn(x: torch.Tensor, f: torch.Tensor = f, up: int = up, down: int = down, pad: list = pad) -> torch.Tensor:
            return upfirdn2d(x, f, up=up, down=down, padding=pad, impl="ref")

        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


def test_upfirdn2d_float16_cpu() -> None:
    x = _image([1, 2, 6, 6])
    f = setup_filter([1, 3, 3, 1])
    try:
        F.conv2d(torch.zeros([1, 1, 3, 3], dtype=torch.float16), torch.zeros([1, 1, 2, 2], dtype=torch.float16))
    except RuntimeError as e:
        pytest.skip(f"torch has no CPU float16 conv2d: {e}")
    y16 = upsample2d(x.half(), f)
    assert y16.dtype == torch.float16
    torch.testing.assert_close(y16.float(), upsample2d(x, f), rtol=1e-2, atol=1e-2)


def test_upfirdn2d_bad_arguments() -> None:
    x = _image([1, 1, 4, 4])
    with pytest.raises(ValueError, match="float tensor"):
        upfirdn2d(x[0], None)
    with pytest.raises(ValueError, match="float32"):
        upfirdn2d(x, torch.ones([2, 2], dtype=torch.float64))
    with pytest.raises(ValueError, match="up/down"):
        upfirdn2d(x, None, up=0)
    with pytest.raises(ValueError, match="padding"):
        upfirdn2d(x, None, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="impl must be one of"):
        upfirdn2d(x, None, impl="fast")
    with pytest.raises(ValueError, match="needs a CUDA tensor"):
        upfirdn2d(x, None, impl="cuda")  # the identity filter goes through the dispatcher too
