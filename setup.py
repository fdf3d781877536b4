"""ficekit: text-conditioned garment editing by StyleGAN2 GAN inversion (FICE), packaged."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent

setup(
    name="ficekit",
    version="0.1.0",
    description="Edit the garment in a photo of a person from a text description (FICE, StyleGAN2 GAN inversion)",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ficekit", "ficekit.*", "stylegan2_ops", "stylegan2_ops.*"]),
    package_data={"stylegan2_ops": ["csrc/*.cpp", "csrc/*.cu", "csrc/*.h", "csrc/*.cuh"]},
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "open_clip_torch>=2.24",
        "numpy>=1.24",
        "pillow>=9.0",
        "tqdm>=4.60",
        "ninja>=1.11",
    ],
    extras_require={"dev": ["pytest>=7.4", "ruff>=0.5"]},
)
