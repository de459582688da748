"""``python -m diffusion.text``: train or measure a SpriteCLIP (see :func:`diffusion.text.main`).

A package's ``__main__`` rather than the module itself, so that running it does not import
``diffusion.text`` a second time as ``__main__`` (``diffusion`` imports it on the way in).
"""

from . import main

main()
