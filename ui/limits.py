"""The app's own limits and constants, each written once.

Limits of a sampling run itself (seed, guidance, steps, RePaint's resampling, sprites per call)
belong to the model and live in ``diffusion.options`` and the schedule; these are the ones a
shared web server adds on top: what one request, one session and one upload may cost.
"""

from __future__ import annotations

# -- one request --------------------------------------------------------------------------------
MAX_BATCH = 16  # sprites one Generate or Edit run draws: a 4x4 sheet
DEFAULT_BATCH = 16  # Generate starts with a full sheet
SMALL_BATCH = 4  # Edit and Compare start with a few, to compare side by side quickly
# One request may cost at most this many sprite-steps (network calls x sprites, see
# diffusion.options.SamplingOptions.work): DDPM's 500 steps for 8 sprites, or the defaults
# 100 times over. Larger jobs would hold a worker for minutes.
MAX_WORK = 4000
MAX_PROMPT_CHARS = 80  # a few words; the text encoder refuses more word pieces anyway
MAX_FRAMES = 48  # frames of one morph
MORPH_FRAMES = 16  # frames a morph starts with
MIN_STRENGTH = 0.01  # below this an edit would change nothing visible

# -- sessions and the server ----------------------------------------------------------------------
# Runs one browser session may have going or waiting at once; more are refused at their start.
MAX_JOBS_PER_SESSION = 2
CONCURRENCY = 2  # sampling is CPU/GPU bound: more parallel runs only make each one slower
QUEUE_SIZE = 64

# -- uploads ------------------------------------------------------------------------------------
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4096 * 4096
UPLOAD_TYPES = [".png", ".gif", ".jpg", ".jpeg", ".webp", ".bmp"]

# -- files on disk ------------------------------------------------------------------------------
KEEP_RUNS = 64  # output folders kept on disk; older ones are deleted as new runs start
# Our own sweep of Gradio's file cache and our run folders (Gradio's delete_cache dies on its
# first sweep that overlaps traffic): files older than MAX_AGE go, and the oldest beyond MAX_BYTES.
CACHE_EVERY_S, CACHE_MAX_AGE_S, CACHE_MIN_AGE_S = 60.0, 1800.0, 300.0
CACHE_MAX_BYTES = 512 * 2**20

# -- what the page shows ------------------------------------------------------------------------
MAX_TEXT = 200  # characters of user text echoed back in a message
IMAGE_HEIGHT = 340  # px on the page; the browser scales with image-rendering: pixelated
SCALE = 8  # a 16 px sprite becomes 128 px: big enough to see, nearest-neighbour so still crisp
STRIP_SCALE = 4  # a morph's strip of every frame is long: enlarged half as much
SHOW_PX = 192  # Forward's noised sprites are enlarged to about this size
# A new preview at least this often (5 a second), whatever the step count; never more often,
# since the browser cannot draw hundreds of images a second.
PREVIEW_INTERVAL_S = 0.2
GIF_MAX_FRAMES = 60
GIF_HOLD_MS = 1500
GIF_MS_RANGE = (20, 500)
GIF_MS = 80  # the animation's default speed
MORPH_FRAME_MS = 90  # a morph's frames, there and back, with no pause at the ends
UNCONDITIONAL = "(none)"  # the label choice for no label
PALETTE_CHOICES = [
    ("raw model output", "raw"),
    ("training palette", "data"),
    ("at most 8 colours", "8"),
    ("at most 4 colours", "4"),
]
TRANSPARENT = "transparent"  # the background choice that keeps an RGBA model's sprites clear
BACKGROUND_CHOICES = [
    ("transparent (checkerboard)", TRANSPARENT),
    ("white", "#ffffff"),
    ("black", "#000000"),
    ("dark grey", "#2b2b2b"),
]
