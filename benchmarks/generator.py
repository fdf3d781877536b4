"""Forward+backward time per image of the FICE-size (256 px) StyleGAN2 generator: CUDA ops vs reference path.

Both paths are timed in the same run on the same weights and W+, so the ratio is meaningful even
on a noisy machine. On a machine without CUDA only the reference path runs (on the CPU).

    python benchmarks/generator.py [--device cuda] [--batch 4] [--iters 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ficekit.generator import Generator
from stylegan2_ops import default_impl

# The architecture of FICE's released generator.pt (NVlabs config: 256 px, 14 ws, fp16 top 4 resolutions).
FICE_G_KWARGS = dict(
    z_dim=512, w_dim=512, c_dim=0, img_resolution=256, img_channels=3,
    mapping_kwargs=dict(num_layers=8),
    synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward_backward(G: Generator, ws: torch.Tensor, iters: int, warmup: int, impl: str) -> float:
    """Seconds per image for synthesis(ws) + backward to ws, with every op in `impl`."""
    device = ws.device
    with default_impl(impl):
        for step in range(warmup + iters):
            if step == warmup:
                _sync(device)
                start = time.perf_counter()
            w = ws.detach().requires_grad_(True)
            img = G.synthesis(w, noise_mode="const")
            img.square().mean().backward()
        _sync(device)
    return (time.perf_counter() - start) / (iters * ws.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default: 4 on cuda, 1 on cpu)")
    parser.add_argument("--iters", type=int, default=None, help="timed steps (default: 20 on cuda, 2 on cpu)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 on cuda, 1 on cpu)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/generator.json"), help="where to write")
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    on_cuda = device.type == "cuda"
    batch = args.batch or (4 if on_cuda else 1)
    iters = args.iters or (20 if on_cuda else 2)
    warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)

    torch.manual_seed(0)
    G = Generator(**FICE_G_KWARGS).eval().requires_grad_(False).to(device)
    ws = G.mapping(torch.randn(batch, G.z_dim, device=device))

    impls = ["ref", "cuda"] if on_cuda else ["ref"]
    seconds = {impl: time_forward_backward(G, ws, iters, warmup, impl) for impl in impls}
    result = {
        "benchmark": "generator forward+backward, 256 px FICE config, per image",
        "device": torch.cuda.get_device_name(device) if on_cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "batch": batch,
        "iters": iters,
        "seconds_per_image": seconds,
        "speedup_cuda_over_ref": seconds["ref"] / seconds["cuda"] if on_cuda else None,
    }

    print(f"{'path':<8}{'s/image':>12}")
    for impl, s in seconds.items():
        print(f"{impl:<8}{s:>12.4f}")
    if on_cuda:
        print(f"speed-up (ref / cuda): {result['speedup_cuda_over_ref']:.2f}x")
    else:
        print("CUDA not available: reference path only (CPU)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
