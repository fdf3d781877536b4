"""StyleGAN2 in the NVlabs stylegan2-ada layout, and loaders for FICE, NVlabs and rosinality checkpoints."""

from .discriminator import Discriminator
from .loaders import load_discriminator, load_generator, save_generator
from .synthesis import Generator, synthesize_01, to_01

__all__ = ["Discriminator", "Generator", "load_discriminator", "load_generator", "save_generator", "synthesize_01", "to_01"]
