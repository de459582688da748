"""The app's own limits and constants, each written once.

Limits of a sampling run itself (seed, guidance, steps, RePaint's resampling, sprites per call)
belong to the model and live in ``diffusion.options`` and the schedule; these are the ones a
shared web server adds on top: what one request, one session and one upload may cost.
"""

from __future__ import annotations

import os

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
# Runs one browser session may have going or waiting at once; more are refused as they ask to
# queue, whichever way they come (the page, gradio_client, raw HTTP).
MAX_JOBS_PER_SESSION = 2
# The same for one client address (a new session is one request away): generous enough for a
# household or classroom behind one address, small enough that the queue stays open to others.
MAX_JOBS_PER_CLIENT = 8
MAX_EVENTS_PER_CLIENT = 16  # events of any kind one address may have waiting or running
# The page's quick helpers (a sampler's note, a random seed, Stop) skip the queue, through
# /gradio_api/run/predict: at most this many running at once per address (a page has one or two).
MAX_HELPERS_PER_CLIENT = 8
SAMPLING_QUEUE = "sampling"  # the concurrency id of every event that runs the network
CONCURRENCY = 2  # sampling is CPU/GPU bound: more parallel runs only make each one slower
QUEUE_SIZE = 64
# How often Gradio's queue looks for a waiting request and a free worker (its own default,
# 1 ms, kept an idle server at 6-8% of a core; 5 ms: about 2%, for at most 5 ms of waiting).
QUEUE_POLL_S = 0.005
# Proxies in front of the app that append the caller's address to X-Forwarded-For (a Space has
# one); with 0 the address is the connection's, and the header, which anyone can send, is ignored.
PROXY_HOPS = int(
    os.environ.get("SPRITE_STUDIO_PROXY_HOPS", "1" if os.environ.get("SPACE_ID") else "0")
)
# Request bodies: JSON calls are a few hundred bytes; an upload is a file and its form fields.
MAX_REQUEST_BYTES = 64 * 1024
# Sessions: Gradio keeps each visitor's copy of the page state; these bound how many and how long.
SESSION_TTL_S = 1800  # a session unseen this long is forgotten
MAX_SESSIONS = 400  # about 0.3 MB each (120 MB in all)
# Sessions one client address may hold (each raw API call opens one): a classroom's tabs behind
# one address fit; beyond it the address's own longest unseen session goes, no one else's.
MAX_SESSIONS_PER_CLIENT = 64

# -- uploads ------------------------------------------------------------------------------------
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_UPLOAD_REQUEST_BYTES = MAX_UPLOAD_BYTES + MAX_REQUEST_BYTES  # one file and its form
# What one client address may upload in a window: a burst cannot fill the disk before the cache
# sweeper (which spares files younger than CACHE_MIN_AGE_S) gets to it.
UPLOAD_BUDGET_BYTES, UPLOAD_WINDOW_S = 50 * 2**20, 600.0
UPLOAD_TYPES = [".png", ".gif", ".jpg", ".jpeg", ".webp", ".bmp"]
# The Edit canvas: its brush layers, and the pictures pages have sent ahead of runs not yet
# started, held in memory (the oldest are dropped beyond this).
EDITOR_LAYERS = 4
EDITOR_PENDING_BYTES = 32 * 2**20

# -- files on disk ------------------------------------------------------------------------------
KEEP_RUNS = 64  # output folders kept on disk; older ones are deleted as new runs start
# Our own sweep of Gradio's file cache and our run folders (Gradio's delete_cache dies on its
# first sweep that overlaps traffic): files older than MAX_AGE go, and the oldest beyond MAX_BYTES.
CACHE_EVERY_S, CACHE_MAX_AGE_S, CACHE_MIN_AGE_S = 60.0, 1800.0, 300.0
CACHE_MAX_BYTES = 512 * 2**20

# -- what the page shows ------------------------------------------------------------------------
MAX_TEXT = 200  # characters of user text echoed back in a message
IMAGE_HEIGHT = 340  # px on the page; the browser scales with image-rendering: pixelated
# A sprite's side in a sheet: a 16 px sprite enlarged 8x, a 32 px one 4x; big enough to see,
# nearest-neighbour so still crisp.
SPRITE_PX = 128
STRIP_PX = 64  # a morph's strip of every frame is long: each frame half as large
SHOW_PX = 192  # Forward's noised sprites are enlarged to about this size
LATENT_TILE_PX = 64  # each channel of a latent model's latent is enlarged to about this size
# A new preview at least this often (5 a second), whatever the step count; never more often,
# since the browser cannot draw hundreds of images a second.
PREVIEW_INTERVAL_S = 0.2
GIF_MAX_FRAMES = 60
GIF_HOLD_MS = 1500
GIF_MS_RANGE = (20, 500)
GIF_MS = 80  # the animation's default speed
MORPH_FRAME_MS = 90  # a morph's frames, there and back, with no pause at the ends
UNCONDITIONAL = "(none)"  # the label choice for no label
PALETTE_FILE = "file"  # the palette choice that reads the uploaded palette file
PALETTE_CHOICES = [
    ("raw model output", "raw"),
    ("training palette", "data"),
    ("DawnBringer 16", "db16"),
    ("DawnBringer 32", "db32"),
    ("PICO-8", "pico8"),
    ("Game Boy (4 greens)", "gameboy"),
    ("at most 16 colours", "16"),
    ("at most 8 colours", "8"),
    ("at most 4 colours", "4"),
    ("my palette file (upload it below)", PALETTE_FILE),
]
OUTLINE_CHOICES = [("none", ""), ("black", "#000000"), ("white", "#ffffff")]
TILE_REPEAT = 3  # a tileable run's sprites are shown laid 3x3, so their seams show
TILE_PX = 64  # ... each tile smaller than in a sheet: the 3x3 is three sprites wide
# The game downloads: a sheet + Aseprite JSON at the chosen scale, every sprite alone at each of
# diffusion.render.EXPORT_SCALES, the denoising frames as a sheet; "off" for the GIF and PNG only.
EXPORTS_OFF = "off"
EXPORT_CHOICES = [("off", EXPORTS_OFF), ("1x", "1"), ("2x", "2"), ("4x", "4"), ("8x", "8")]
EXPORT_DEFAULT = EXPORTS_OFF  # most runs are for looking; an API call gets the GIF and PNG
TRANSPARENT = "transparent"  # the background choice that keeps an RGBA model's sprites clear
BACKGROUND_CHOICES = [
    ("transparent (checkerboard)", TRANSPARENT),
    ("white", "#ffffff"),
    ("black", "#000000"),
    ("dark grey", "#2b2b2b"),
]

# -- the 2D tab (diffusion.toy) -----------------------------------------------------------------
TOY_MAX_POINTS = 2000  # points one 2D run moves; more only blur the picture into a blot
TOY_POINTS = 400  # what the tab starts with
TOY_MAX_SAMPLERS = 4  # one panel each, beside the field's
# Points x denoiser calls over all samplers of one run: 2,000 points through 500 calls.
TOY_MAX_WORK = 1_000_000
TOY_PATHS = 40  # paths drawn per sampler, the first points': more tangle into one blot
TOY_FRAMES = 30  # frames of the forward-process animation
