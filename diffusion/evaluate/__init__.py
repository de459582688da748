"""Measure a trained sprite model: label accuracy, distances to real sprites, a critic, copies.

Usage: ``python -m diffusion.evaluate MODEL --data DIR [--n 100] [--sampler dpmpp_2m] ...``

The package: :mod:`.classifier` (the feature extractor and its cache), :mod:`.metrics` (the
measures, functions of arrays), :mod:`.driver` (generation, reference sets, the report,
:func:`compare`), :mod:`.report` (the tables and the command line).

A small CNN sprite classifier, trained on the stratified train split of the data
(``data.split(holdout=0.2, seed=0)``) and cached on disk keyed by the data's content, gives:

* **label accuracy**: the share of generated sprites that the classifier assigns to the label
  they were conditioned on. The reference is the classifier's balanced accuracy (mean of the
  per-label accuracies) on the real held-out split, because the generated set is balanced too;
  the ratio says how recognisable the generated sprites are compared with real unseen ones.
* **Frechet distance** (``frechet_distance``) between Gaussians fitted to the classifier's
  penultimate features (the FID recipe with a sprite classifier in place of Inception).
  Generated sprites (n per label) are compared with a reference set of held-out sprites drawn n
  per label (with replacement for labels that have fewer than n), so both sides have the same
  size and label mix even though the data is very unbalanced. The floor is the same distance for
  n-per-label training sprites against the same reference: what a model that reproduced its
  training set would score, including the small-sample bias of the estimate. The ratio
  generated / floor is then comparable across runs.
* **KID** (``kid``, Binkowski et al. 2018) on the same features and sets: the unbiased MMD^2
  with the kernel ``(x . y / d + 1)^3``. Unbiased, so its floor is near 0 and it needs no ratio;
  it can be slightly negative.

These features say what a sprite shows, not how it is drawn: they are blind to stray pixels,
muddy clusters and broken outlines. Two measures look at the drawing:

* **pixel patterns** (``frechet_distance_patterns``, ``kid_patterns``): the Frechet distance
  and KID of :func:`~.metrics.pixel_patterns`, per sprite the histogram of its pixels' 3x3
  patterns (which of the 8 neighbours share the pixel's colour, mirror images merged, white
  background apart), on the same sets and with the same floor. The histograms are scaled so
  that the training split's mean square is 1 per dimension, the scale KID's kernel expects.
* **classifier two-sample test** (``c2st_accuracy``, ``c2st_auc``; Lopez-Paz & Oquab 2017): a
  fresh small CNN critic, fed each pixel's neighbour-equality and background maps, learns to
  tell generated sprites from held-out ones in 5 folds; the report has the mean held-out
  accuracy and AUC (0.5: the critic finds no difference; the AUC keeps the critic's confidence
  and is the more sensitive). Both sides hold min(n, held-out count) distinct sprites per
  label; the floor is the same test for as many training sprites against the same held-out ones.

Each of these six figures comes with a standard error (``se``) and a 95% interval (``ci95``):
for the distances from a bootstrap over sprites, for the critic from its fold accuracies (see
:func:`evaluate_palettes`); :func:`compare` tells whether one setting beats another.

* **near-copy rate**: a sprite is a near copy when, against some data sprite or its mirror
  image, at most ``COPY_MAX_SHARE`` (5%) of its pixels differ by more than ``COPY_TOLERANCE``
  (32 of 255) in any channel. Pixel art has few pixels, so counting changed pixels separates
  copies from redraws better than a mean difference, and the tolerance ignores the faint colour
  noise of generated pixels. Generated sprites are checked against every sprite of the data and
  its second animation frames (a model may have been trained on all of them); the reference is
  the rate for real held-out sprites against the train split (and its frames), which is not
  zero: the data keeps recolours and autotile variants. Both rates are averaged per label. A
  label whose generated rate is above the held-out one beyond noise (95% Wilson intervals
  apart) is listed in ``near_copy_rate["memorised"]``, and :func:`compare` will not call such
  a model better: copies flatter every other figure.
* **crispness**, for generated and real held-out sprites side by side, and their ratio:
  distinct colours per sprite (colours closer than ``COLOUR_TOLERANCE`` merged, most frequent
  first), the share of flat neighbour pairs (horizontal and vertical neighbours within
  ``FLAT_TOLERANCE`` in every channel), and the mean distance (RGB, 0..255) of a pixel to the
  nearest colour of the training split's palette. Pixel art has few flat colours; a speckled
  model has many near-identical ones.

Every figure can be the mean over several evaluation seeds (``--seeds 0,1,2``, the default of
the command line): the Frechet estimate moves by about 0.2 with the seed. ``--palette`` measures
the output with the palette stage (``render.apply_palette``) as well, on the same samples.

A model trained on all of the data has seen the held-out sprites, which flatters its distances;
``python -m diffusion.train --split train`` keeps them unseen.

A text model has two more measures: :func:`evaluate_text` (how well sprites match held-out
names given as prompts beside their label, by SpriteCLIP) and :func:`evaluate_prompts` (prompts
that name a class, :data:`CLASS_PROMPTS`, drawn without a label: the share the classifier
assigns to the named label).
"""

from diffusion.evaluate.classifier import (
    CLASSIFIER_VERSION,
    DEFAULT_CACHE,
    SpriteClassifier,
    load_or_train_classifier,
    train_classifier,
)
from diffusion.evaluate.driver import (
    UNCERTAIN,
    compare,
    evaluate,
    evaluate_palettes,
    evaluate_text,
)
from diffusion.evaluate.metrics import (
    COLOUR_TOLERANCE,
    COPY_MAX_SHARE,
    COPY_TOLERANCE,
    FLAT_TOLERANCE,
    balanced_indices,
    colours_per_sprite,
    flat_pair_share,
    frechet_distance,
    kernel_inception_distance,
    near_copies,
    palette_distance,
    pixel_patterns,
    two_sample_test,
)
from diffusion.evaluate.prompts import (
    CLASS_PROMPTS,
    TARGET_SHARE,
    evaluate_prompts,
    format_prompt_report,
)
from diffusion.evaluate.report import format_report, format_text_report, main

__all__ = [
    "CLASSIFIER_VERSION",
    "CLASS_PROMPTS",
    "COLOUR_TOLERANCE",
    "COPY_MAX_SHARE",
    "COPY_TOLERANCE",
    "DEFAULT_CACHE",
    "FLAT_TOLERANCE",
    "TARGET_SHARE",
    "UNCERTAIN",
    "SpriteClassifier",
    "balanced_indices",
    "colours_per_sprite",
    "compare",
    "evaluate",
    "evaluate_palettes",
    "evaluate_prompts",
    "evaluate_text",
    "flat_pair_share",
    "format_prompt_report",
    "format_report",
    "format_text_report",
    "frechet_distance",
    "kernel_inception_distance",
    "load_or_train_classifier",
    "main",
    "near_copies",
    "palette_distance",
    "pixel_patterns",
    "train_classifier",
    "two_sample_test",
]
