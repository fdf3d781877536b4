"""ficekit: text-conditioned garment editing by StyleGAN2 GAN inversion (FICE), packaged."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent

# The shipped demo bundle, checkpoints/demo/ (bundle.json + model files + example images), installs as the
# package data of `ficekit_checkpoints`, a data-only package mapped onto checkpoints/; ficekit.bundle finds it
# there after `pip install .`, and in checkpoints/ itself in an editable install or a checkout.
data_packages = ["ficekit_checkpoints"] if (here / "checkpoints" / "demo").is_dir() else []

setup(
    name="ficekit",
    version="0.1.0",
    description="Edit the garment in a photo of a person from a text description (FICE, StyleGAN2 GAN inversion)",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ficekit", "ficekit.*", "stylegan2_ops", "stylegan2_ops.*"]) + data_packages,
    package_dir={"ficekit_checkpoints": "checkpoints"} if data_packages else {},
    package_data={
        "stylegan2_ops": ["csrc/*.cpp", "csrc/*.cu", "csrc/*.h", "csrc/*.cuh"],
        "ficekit": ["py.typed"],
        "ficekit_checkpoints": ["demo/*", "demo/**/*"],
    },
    entry_points={
        "console_scripts": [
            "ficekit-edit=ficekit.edit:main",
            "ficekit-app=ficekit.app.__main__:main",
            "ficekit-download=ficekit.download:main",
            "ficekit-eval=ficekit.eval.run:main",
            "ficekit-eval-synthetic=ficekit.eval.synthetic:main",
            "ficekit-eval-inversion=ficekit.eval.inversion:main",
            "ficekit-sweep=ficekit.eval.sweep:main",
            "ficekit-domain=ficekit.domain_calibrate:main",
            "ficekit-train=ficekit.synthetic.train:main",
            "ficekit-inpaint=ficekit.baselines.inpaint:main",
        ],
    },
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "open_clip_torch>=2.24",
        "numpy>=1.24",
        "pillow>=9.0",
        "tqdm>=4.60",
        "ninja>=1.11",
    ],
    extras_require={
        # ficekit.eval.metrics: LPIPS (its linear layers ship inside the package; backbones load from local files).
        "eval": ["lpips>=0.1.4"],
        # ficekit.baselines.inpaint: the diffusion-inpainting baseline (models load from local folders or the HF cache).
        "diffusion": ["diffusers>=0.27", "transformers>=4.38"],
        # ficekit.app: the local web page (python -m ficekit.app).
        "app": ["gradio>=6.1"],
        # ficekit.eval.sweep's trade-off plot.
        "plot": ["matplotlib>=3.7"],
        # eval's and diffusion's packages too, so CI runs their tests; scipy and pytorch-fid are the tests' references.
        "dev": [
            "pytest>=7.4", "ruff>=0.5", "lpips>=0.1.4", "scipy>=1.10", "pytorch-fid>=0.3", "diffusers>=0.27",
            "transformers>=4.38", "gradio>=6.1", "matplotlib>=3.7", "scikit-image>=0.21", "playwright>=1.40",
        ],
    },
)
