"""Forward+backward time per 256-px image of each frozen model FICE's objective looks through.

FICE-size architectures with random weights (no downloads): DensePose R_50_FPN_s1x (whole-image
box), FICE's DeepLabV3-ResNet50 segmenter, CLIP RN50x4 (open_clip), and the e4e IR-SE-50 encoder.
Each step back-propagates a scalar of the model's output to the input image, as the losses do.

    python benchmarks/perception.py [--device cuda] [--batch 1] [--iters 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ficekit.encoder import Encoder4Editing
from ficekit.perception.clip import load_clip
from ficekit.perception.densepose import DensePoseChartModel
from ficekit.perception.segmenter import FiceSegmenter, build_fice_deeplab


def _frozen(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return module.eval().requires_grad_(False).to(device)


def build_models(device: torch.device) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """name -> function from an image [N,3,256,256] in [0,1] to a scalar the image's gradient flows from."""
    torch.manual_seed(0)
    densepose = _frozen(DensePoseChartModel("R_50_FPN_s1x"), device)
    segmenter = _frozen(FiceSegmenter(build_fice_deeplab()), device)
    clip = load_clip("RN50x4", None, device=device)
    text = clip.encode_text(["a striped cotton shirt"])
    e4e = _frozen(Encoder4Editing(gan_size=256, num_layers=50), device)
    return {
        "densepose_r50_fpn": lambda x: densepose(x).body_parts().square().mean(),
        "segmenter_deeplabv3_r50": lambda x: segmenter(x).head.square().mean(),
        "clip_rn50x4": lambda x: (1 - clip.similarity(clip.encode_image(x), text)).sum(),
        "e4e_ir_se50": lambda x: e4e(x).square().mean(),
    }


def time_model(loss_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, iters: int, warmup: int) -> float:
    """Seconds per image for loss_fn(image) + backward to the image."""
    for step in range(warmup + iters):
        if step == warmup:
            if image.is_cuda:
                torch.cuda.synchronize(image.device)
            start = time.perf_counter()
        x = image.detach().requires_grad_(True)
        loss_fn(x).backward()
        assert x.grad is not None
    if image.is_cuda:
        torch.cuda.synchronize(image.device)
    return (time.perf_counter() - start) / (iters * image.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    parser.add_argument("--batch", type=int, default=1, help="images per step")
    parser.add_argument("--iters", type=int, default=None, help="timed steps (default: 20 on cuda, 2 on cpu)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3 on cuda, 1 on cpu)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/perception.json"), help="where to write")
    args = parser.parse_args()

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    iters = args.iters or (20 if on_cuda else 2)
    warmup = args.warmup if args.warmup is not None else (3 if on_cuda else 1)

    image = torch.rand(args.batch, 3, 256, 256, generator=torch.Generator().manual_seed(1)).to(device)
    seconds = {name: time_model(fn, image, iters, warmup) for name, fn in build_models(device).items()}
    result = {
        "benchmark": "perception forward+backward to the image, 256 px, per image",
        "device": torch.cuda.get_device_name(device) if on_cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "batch": args.batch,
        "iters": iters,
        "seconds_per_image": seconds,
    }
    print(f"{'model':<26}{'s/image':>10}")
    for name, s in seconds.items():
        print(f"{name:<26}{s:>10.4f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
