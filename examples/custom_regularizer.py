"""Register your own latent regulariser and use it in an edit, like the built-in ones (w_delta, w_mean, ...).

    python examples/custom_regularizer.py --weight 0.5

The regulariser here pulls the W+ rows of the coarse layers (pose and shape) toward their mean, leaving the
fine layers (colour and texture) free: a small example of a layer-selective prior.
"""

import argparse

import torch

from ficekit import FicePipeline, LatentRegularizer, register_regularizer


class CoarseRowsTogether(LatentRegularizer):
    """penalty(ws) = mean over the first `layers` W+ rows of ||w_i - mean_j w_j||² (per sample, summed over the batch)."""

    name = "coarse_together"

    def __init__(self, layers: int = 4) -> None:
        super().__init__()
        self.layers = layers

    def penalty(self, ws: torch.Tensor) -> torch.Tensor:
        coarse = ws[:, : self.layers]
        return (coarse - coarse.mean(dim=1, keepdim=True)).pow(2).sum(dim=2).mean(dim=1).sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="demo")
    parser.add_argument("--weight", type=float, default=1.0)
    parser.add_argument("--iterations", type=int, default=None)
    args = parser.parse_args()

    # A factory takes the generator (None when not needed) and returns the term; registered names work everywhere
    # a regulariser name does: EditSettings, --regularizer, bundle defaults and python -m ficekit.eval.sweep.
    register_regularizer(CoarseRowsTogether.name, lambda G=None: CoarseRowsTogether(), overwrite=True)

    pipe = FicePipeline.from_bundle(args.bundle)
    photo = pipe.bundle.example_images[0]
    result = pipe.edit(photo, "red t-shirt", regularizer="coarse_together",
                       weights={"coarse_together": args.weight}, iterations=args.iterations, progress=False)
    history = result.history["coarse_together"]
    print(f"coarse_together: {history[0]:.4g} at the first step, {history[-1]:.4g} at the last")


if __name__ == "__main__":
    main()
