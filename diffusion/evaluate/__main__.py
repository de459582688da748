"""``python -m diffusion.evaluate MODEL --data DIR``: see :mod:`diffusion.evaluate`."""

import sys

from diffusion.evaluate.report import main

sys.exit(main())
