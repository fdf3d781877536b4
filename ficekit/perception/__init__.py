"""Frozen, differentiable perception models FICE's objective looks through (DensePose, segmenter, CLIP)."""
