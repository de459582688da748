"""Labelled sprite datasets: loading, validation, and stratified splits.

Three sources are understood by :func:`load_dataset`:

1. a folder of NumPy arrays in the DeepLearning.AI "How Diffusion Models Work" layout:
   ``images.npy`` (N, H, W, 3) uint8 and ``labels.npy`` (N, K) one-hot, with optional
   ``meta.json`` (``label_names``), ``rgba.npy`` (the sprites with their alpha) and
   ``frame1_rgb.npy`` / ``has_frame1.npy`` (a second animation frame); the course's own
   ``sprites_1788_16x16.npy`` + ``sprite_labels_nc_1788_16x16.npy`` pair is recognised by name;
2. a folder of PNG files with one sub-folder per label;
3. ``hf://datasets/OWNER/NAME``: a Hugging Face Hub dataset repository, downloaded with
   ``huggingface_hub.snapshot_download`` and then searched for layout 1 or 2.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "COURSE_LABEL_NAMES",
    "EVAL_HOLDOUT",
    "EVAL_SPLIT_SEED",
    "DataError",
    "SpriteDataset",
    "load_dataset",
    "name_from_path",
]

COURSE_IMAGES = "sprites_1788_16x16.npy"
COURSE_LABELS = "sprite_labels_nc_1788_16x16.npy"
# The course notebook describes its five one-hot columns in this order.
COURSE_LABEL_NAMES = ["hero", "non-hero", "food", "spell", "side-facing"]

HF_PREFIX = "hf://datasets/"
# The split diffusion.evaluate holds out; ``train --split train`` leaves it unseen.
EVAL_HOLDOUT = 0.2
EVAL_SPLIT_SEED = 0

# Words of a file name that say a colour or shade: English puts them first ("red dragon"), file
# names often last ("dragon_red").
_SHADES = frozenset({
    "red", "blue", "green", "yellow", "purple", "cyan", "magenta", "white", "black", "brown",
    "grey", "gray", "darkgray", "lightgray", "darkgrey", "lightgrey", "pink", "orange", "golden",
    "silver", "dark", "light", "bright", "pale", "violet", "lightblue", "lightgreen", "lightcyan",
    "lightmagenta", "lightred", "darkblue", "darkgreen",
})  # fmt: skip
# Folders whose name is the thing their files show, when the file name leaves it out
# ("ring/ruby.png" is a ruby ring, "wall/stone_dark1.png" a dark stone wall).
_FOLDER_NOUNS = {
    "altars": "altar", "amulet": "amulet", "book": "book", "doors": "door", "floor": "floor",
    "gateways": "gateway", "gold": "gold", "potion": "potion", "ring": "ring", "rod": "rod",
    "scroll": "scroll", "shields": "shield", "staff": "staff", "statues": "statue",
    "traps": "trap", "trees": "tree", "wall": "wall", "wand": "wand", "water": "water",
    "artefact": "artefact",
}  # fmt: skip
# Tile-set codes that name no thing (random and special artefacts).
_CODES = frozenset({"urand", "unrand", "spwpn"})


class DataError(ValueError):
    """A dataset is missing, malformed, or in a layout that is not understood."""


@dataclass
class SpriteDataset:
    """Square RGB sprites on a white background, each with one class label.

    Attributes:
        images: (N, H, W, 3) uint8 with H == W.
        labels: (N,) int64 index into ``label_names``.
        label_names: one name per class.
        source: where the data came from (a path or ``hf://...``), for messages and reports.
        alt_images: (N, H, W, 3) uint8, another animation frame of sprite i (equal to
            ``images[i]`` for sprites that are not animated), or None when the source has none.
        names: a short description of each sprite ("red potion"), for text conditioning, or
            None when the source has none (``meta.json`` "names", else each sprite's file path,
            ``meta.json`` "paths", read as a name by :func:`name_from_path`).
        alpha: (N, H, W) uint8 opacity of each sprite (``rgba.npy``; ``images`` are these
            sprites composited on white), or None when the source has none.
        alt_alpha: (N, H, W) uint8 opacity of ``alt_images`` (see :func:`frame_alpha`), or None.
    """

    images: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    source: str
    alt_images: np.ndarray | None = None
    names: list[str] | None = None
    alpha: np.ndarray | None = None
    alt_alpha: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Checked here as well as in the loaders so that subsets and hand-built datasets
        # cannot drift out of shape.
        _check_images(self.images, self.source)
        if not np.issubdtype(self.labels.dtype, np.integer):
            raise DataError(
                f"{self.source}: labels must be integer indices, got {self.labels.dtype}"
            )
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise DataError(
                f"{self.source}: labels must have shape ({len(self.images)},), "
                f"got {self.labels.shape}"
            )
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= self.num_labels):
            raise DataError(
                f"{self.source}: label indices must lie in [0, {self.num_labels}), "
                f"got [{self.labels.min()}, {self.labels.max()}]"
            )
        if self.alt_images is not None and (
            self.alt_images.shape != self.images.shape or self.alt_images.dtype != np.uint8
        ):
            raise DataError(
                f"{self.source}: alt_images must be uint8 {self.images.shape}, "
                f"got {self.alt_images.dtype} {self.alt_images.shape}"
            )
        for name in ("alpha", "alt_alpha"):
            a = getattr(self, name)
            if a is not None and (a.shape != self.images.shape[:3] or a.dtype != np.uint8):
                raise DataError(
                    f"{self.source}: {name} must be uint8 {self.images.shape[:3]}, "
                    f"got {a.dtype} {a.shape}"
                )

    @property
    def resolution(self) -> int:
        """Side length of the square sprites in pixels."""
        return int(self.images.shape[1])

    @property
    def num_labels(self) -> int:
        """Number of classes (including any class without examples)."""
        return len(self.label_names)

    def __len__(self) -> int:
        return len(self.images)

    def counts(self) -> dict[str, int]:
        """Number of sprites per label name, in label order."""
        per_label = np.bincount(self.labels, minlength=self.num_labels)
        return {name: int(c) for name, c in zip(self.label_names, per_label, strict=True)}

    def split(self, holdout: float = 0.2, seed: int = 0) -> tuple[SpriteDataset, SpriteDataset]:
        """Split into (train, held_out), stratified per label and deterministic in ``seed``.

        Each label keeps ``round(holdout * count)`` sprites out, but at least one on each side
        when it has two or more, so that rare classes are represented in both parts.
        """
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {holdout}")
        rng = np.random.default_rng(seed)
        held: list[np.ndarray] = []
        for label in range(self.num_labels):
            idx = np.flatnonzero(self.labels == label)
            if len(idx) == 0:
                continue
            n_held = round(holdout * len(idx))
            if len(idx) >= 2:
                n_held = min(max(n_held, 1), len(idx) - 1)
            held.append(rng.permutation(idx)[:n_held])
        held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
        keep = np.ones(len(self), dtype=bool)
        keep[held_idx] = False
        return self.subset(np.flatnonzero(keep)), self.subset(held_idx)

    def subset(self, idx: np.ndarray | list[int] | slice) -> SpriteDataset:
        """A new dataset holding the sprites at ``idx`` (indices, boolean mask, or slice)."""
        if not isinstance(idx, slice):
            idx = np.asarray(idx)
        return SpriteDataset(
            images=self.images[idx],
            labels=self.labels[idx],
            label_names=list(self.label_names),
            source=self.source,
            alt_images=None if self.alt_images is None else self.alt_images[idx],
            names=None if self.names is None else np.asarray(self.names)[idx].tolist(),
            alpha=None if self.alpha is None else self.alpha[idx],
            alt_alpha=None if self.alt_alpha is None else self.alt_alpha[idx],
        )


def load_dataset(source: str | os.PathLike) -> SpriteDataset:
    """Load a labelled sprite dataset from a folder or ``hf://datasets/OWNER/NAME``.

    Raises:
        DataError: the source is missing, its layout is not recognised, or its contents are
            malformed (wrong shapes or dtypes, labels not one-hot, non-square images, ...).
    """
    text = os.fspath(source)
    if text.startswith("hf://"):
        return _load_hub(text)
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such dataset folder")
    if not path.is_dir():
        raise DataError(f"{path}: expected a dataset folder, got a file")
    return _load_folder(path, source=str(path))


def _load_hub(uri: str) -> SpriteDataset:
    repo_id = uri[len(HF_PREFIX) :].strip("/") if uri.startswith(HF_PREFIX) else ""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise DataError(f"{uri}: expected hf://datasets/OWNER/NAME")
    # Imported lazily: local datasets should not pay for (or require) the hub client.
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id=repo_id, repo_type="dataset")
    except Exception as err:  # the hub client raises many unrelated types (HTTP, OS, auth)
        raise DataError(
            f"{uri}: could not download dataset {repo_id!r} from the Hugging Face Hub "
            f"({type(err).__name__}: {err})"
        ) from err
    root = Path(folder)
    for candidate in _walk_dirs(root):
        if _detect_layout(candidate) is not None:
            return _load_folder(candidate, source=uri)
    raise DataError(
        f"{uri}: no sprite data found in the downloaded snapshot {root} "
        f"(looked for {COURSE_IMAGES}, images.npy + labels.npy, or one PNG folder per label)"
    )


def _walk_dirs(root: Path) -> list[Path]:
    """``root`` and its sub-folders, shallowest first, skipping hidden ones like ``.cache``."""
    found = [root]
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / d for d in dirnames)
    return sorted(found, key=lambda p: (len(p.relative_to(root).parts), str(p)))


def _detect_layout(folder: Path) -> str | None:
    if (folder / "images.npy").is_file() and (folder / "labels.npy").is_file():
        return "npy"
    if (folder / COURSE_IMAGES).is_file() and (folder / COURSE_LABELS).is_file():
        return "course"
    if _label_dirs(folder):
        return "png"
    return None


def _label_dirs(folder: Path) -> list[Path]:
    """Sub-folders holding PNGs, when every visible sub-folder does; otherwise empty."""
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs and all(_pngs(d) for d in subdirs):
        return subdirs
    return []


def _pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")


def _load_folder(folder: Path, source: str) -> SpriteDataset:
    layout = _detect_layout(folder)
    if layout == "npy":
        meta = _read_meta(folder)
        data = _load_npy(folder / "images.npy", folder / "labels.npy", _meta_names(meta), source)
        alt = _load_alt_frames(folder, data.images)
        names = _sprite_names(meta, len(data), folder)
        alpha = _load_alpha(folder, data.images)
        alt_alpha = None if alpha is None or alt is None else frame_alpha(data.images, alpha, alt)
        return SpriteDataset(
            data.images, data.labels, data.label_names, source, alt, names, alpha, alt_alpha
        )
    if layout == "course":
        return _load_npy(folder / COURSE_IMAGES, folder / COURSE_LABELS, COURSE_LABEL_NAMES, source)
    if layout == "png":
        return _load_png_folders(folder, source)
    raise DataError(
        f"{folder}: unknown dataset format; expected images.npy + labels.npy, "
        f"{COURSE_IMAGES} + {COURSE_LABELS}, or one sub-folder of PNG files per label"
    )


def _read_meta(folder: Path) -> dict:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{meta_path}: cannot read JSON ({err})") from err
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: expected a JSON object")
    return meta


def _meta_names(meta: dict) -> list[str] | None:
    names = meta.get("label_names")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DataError("meta.json: label_names must be a list of non-empty strings")
    if len(set(names)) != len(names):
        raise DataError(f"meta.json: label_names has duplicates: {names}")
    return names


def name_from_path(path: str) -> str:
    """A sprite's file path read as a short name, as a prompt would say it:
    "mon/dragons/dragon_red.png" -> "red dragon", "dngn/wall/stone_dark1.png" -> "dark stone
    wall", "item/ring/ruby.png" -> "ruby ring" (numbers, one-letter parts and tile-set codes go;
    shades come first; the folder names the thing when the file does not)."""
    *folders, file = path.replace("\\", "/").split("/")
    stem = file.rsplit(".", 1)[0].lower().replace("-", "_")
    words = [w.rstrip("0123456789") for w in stem.split("_")]
    words = [w for w in words if len(w) > 1 and w not in _CODES]
    words = [w for w in words if w in _SHADES] + [w for w in words if w not in _SHADES]
    noun = next((_FOLDER_NOUNS[f] for f in reversed(folders) if f in _FOLDER_NOUNS), None)
    if noun and noun not in words and noun + "s" not in words:
        words.append(noun)
    return " ".join(dict.fromkeys(words)) or (folders[-1] if folders else stem)


def _sprite_names(meta: dict, n: int, folder: Path) -> list[str] | None:
    names = meta.get("names")
    paths = meta.get("paths")
    one_each = isinstance(paths, list) and len(paths) == n
    if names is None and one_each and all(isinstance(x, str) for x in paths):
        return [name_from_path(x) for x in paths]  # each sprite named by its file
    if names is None:
        return None
    if not isinstance(names, list) or len(names) != n or not all(isinstance(x, str) for x in names):
        raise DataError(f"{folder / 'meta.json'}: names must be {n} strings, one per sprite")
    return names


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npy array ({err})") from err


def _check_images(images: np.ndarray, where: str) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{where}: images must have shape (N, H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise DataError(
            f"{where}: images must be uint8 RGB in [0, 255], got dtype {images.dtype}; "
            "convert them explicitly, e.g. np.clip(x, 0, 255).round().astype(np.uint8)"
        )
    if images.shape[1] != images.shape[2]:
        raise DataError(f"{where}: images must be square, got {images.shape[1]}x{images.shape[2]}")


def _load_npy(
    images_path: Path, labels_path: Path, names: list[str] | None, source: str
) -> SpriteDataset:
    images = _read_npy(images_path)
    _check_images(images, str(images_path))
    if len(images) == 0:
        raise DataError(f"{images_path}: empty dataset (0 images)")
    onehot = _read_npy(labels_path)
    if onehot.ndim != 2:
        raise DataError(f"{labels_path}: labels must be one-hot (N, K), got shape {onehot.shape}")
    if len(onehot) != len(images):
        raise DataError(
            f"{labels_path}: {len(onehot)} labels for {len(images)} images in {images_path.name}"
        )
    if not np.issubdtype(onehot.dtype, np.number) or np.issubdtype(
        onehot.dtype, np.complexfloating
    ):
        raise DataError(f"{labels_path}: labels must be numeric one-hot, got {onehot.dtype}")
    bad = np.flatnonzero(~(np.isin(onehot, (0, 1)).all(axis=1) & (onehot.sum(axis=1) == 1)))
    if len(bad):
        raise DataError(
            f"{labels_path}: labels are not one-hot ({len(bad)} rows do not hold exactly one 1 "
            f"and zeros elsewhere, first at row {bad[0]})"
        )
    num_labels = onehot.shape[1]
    if names is None:
        names = [f"label{i}" for i in range(num_labels)]
    elif len(names) != num_labels:
        raise DataError(
            f"{labels_path}: {num_labels} label columns but {len(names)} label names {names}"
        )
    labels = onehot.argmax(axis=1).astype(np.int64)
    return SpriteDataset(images, labels, list(names), source)


def _load_alt_frames(folder: Path, images: np.ndarray) -> np.ndarray | None:
    frame_path = folder / "frame1_rgb.npy"
    if not frame_path.is_file():
        return None
    frames = _read_npy(frame_path)
    if frames.shape != images.shape or frames.dtype != np.uint8:
        raise DataError(
            f"{frame_path}: expected uint8 {images.shape} like images.npy, "
            f"got {frames.dtype} {frames.shape}"
        )
    has_path = folder / "has_frame1.npy"
    if not has_path.is_file():
        return frames
    has = _read_npy(has_path)
    if has.shape != (len(images),) or has.dtype != np.bool_:
        raise DataError(f"{has_path}: expected bool ({len(images)},), got {has.dtype} {has.shape}")
    # Enforce the documented contract (alt == image when not animated) rather than trust it.
    return np.where(has[:, None, None, None], frames, images)


def _load_alpha(folder: Path, images: np.ndarray) -> np.ndarray | None:
    path = folder / "rgba.npy"
    if not path.is_file():
        return None
    rgba = _read_npy(path)
    if rgba.shape != (*images.shape[:3], 4) or rgba.dtype != np.uint8:
        raise DataError(
            f"{path}: expected uint8 {(*images.shape[:3], 4)} beside images.npy, "
            f"got {rgba.dtype} {rgba.shape}"
        )
    return np.ascontiguousarray(rgba[..., 3])


def frame_alpha(images: np.ndarray, alpha: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The opacity of other animation frames that were stored composited on white.

    A pixel the frame shares with the first frame keeps that frame's alpha; a changed pixel is
    opaque unless it is pure white, which no opaque pixel of dawnlike16 is (the rule agrees
    with the stored alpha on 99.9% of the first frames' pixels).
    """
    same = (frames == images).all(axis=-1)
    white = (frames == 255).all(axis=-1)
    return np.where(same, alpha, np.where(white, 0, 255)).astype(np.uint8)


def _load_png_folders(folder: Path, source: str) -> SpriteDataset:
    label_dirs = _label_dirs(folder)
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, label_dir in enumerate(label_dirs):
        for png in _pngs(label_dir):
            img = _read_png(png)
            if images and img.shape != images[0].shape:
                raise DataError(
                    f"{png}: size {img.shape[1]}x{img.shape[0]} differs from the "
                    f"{images[0].shape[1]}x{images[0].shape[0]} of the other images"
                )
            images.append(img)
            labels.append(label)
    return SpriteDataset(
        images=np.stack(images),
        labels=np.asarray(labels, dtype=np.int64),
        label_names=[d.name for d in label_dirs],
        source=source,
    )


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float64)
    except OSError as err:
        raise DataError(f"{path}: cannot read image ({err})") from err
    if rgba.shape[0] != rgba.shape[1]:
        raise DataError(f"{path}: image must be square, got {rgba.shape[1]}x{rgba.shape[0]}")
    # Same compositing as the shipped datasets: round(rgb*a + 255*(1-a)), a = alpha/255.
    alpha = rgba[..., 3:] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.rint(rgb).astype(np.uint8)
