"""python -m ficekit.baselines: the diffusion-inpainting baseline's command line (ficekit.baselines.inpaint)."""

import sys

from ficekit.baselines.inpaint import main

sys.exit(main())
