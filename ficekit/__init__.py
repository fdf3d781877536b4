"""ficekit: text-conditioned garment editing by StyleGAN2 GAN inversion (FICE), packaged."""

__version__ = "0.1.0"
