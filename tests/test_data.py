"""Tests for diffusion.data: the three source layouts, validation errors, and splits."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from PIL import Image

from diffusion.data import COURSE_LABEL_NAMES, DataError, SpriteDataset, load_dataset

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SNAPSHOT = FIXTURES / "hf_sprites_snapshot"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def one_hot(labels: list[int], k: int, dtype: type = np.float32) -> np.ndarray:
    out = np.zeros((len(labels), k), dtype)
    out[np.arange(len(labels)), labels] = 1
    return out


def write_npy_folder(
    folder: Path,
    images: np.ndarray,
    labels: np.ndarray,
    names: list[str] | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", labels)
    if names is not None:
        (folder / "meta.json").write_text(json.dumps({"label_names": names}))
    return folder


def write_png(path: Path, rgba: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path)


# --- layout 1: npy folders -------------------------------------------------------------------


def test_npy_folder_with_meta_and_alt_frames(tmp_path: Path) -> None:
    images = make_images(4)
    frames = make_images(4, seed=1)
    folder = write_npy_folder(tmp_path, images, one_hot([2, 0, 1, 2], 3), ["a", "b", "c"])
    np.save(folder / "frame1_rgb.npy", frames)
    np.save(folder / "has_frame1.npy", np.array([True, False, True, False]))

    ds = load_dataset(folder)

    assert ds.label_names == ["a", "b", "c"]
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, [2, 0, 1, 2])
    np.testing.assert_array_equal(ds.images, images)
    assert (ds.resolution, ds.num_labels, len(ds)) == (16, 3, 4)
    assert ds.counts() == {"a": 1, "b": 1, "c": 2}
    assert ds.source == str(folder)
    # Non-animated sprites get their own image as the alternate frame, whatever the file says.
    np.testing.assert_array_equal(ds.alt_images[[0, 2]], frames[[0, 2]])
    np.testing.assert_array_equal(ds.alt_images[[1, 3]], images[[1, 3]])


def test_npy_folder_without_meta_gets_generic_names(tmp_path: Path) -> None:
    ds = load_dataset(write_npy_folder(tmp_path, make_images(3), one_hot([0, 3, 1], 4)))
    assert ds.label_names == ["label0", "label1", "label2", "label3"]
    assert ds.alt_images is None
    assert ds.counts() == {"label0": 1, "label1": 1, "label2": 0, "label3": 1}


def test_course_pair_gets_course_label_names() -> None:
    ds = load_dataset(SNAPSHOT)
    raw_labels = np.load(SNAPSHOT / "sprite_labels_nc_1788_16x16.npy")
    assert raw_labels.dtype == np.float64  # the fixture mirrors the course file
    assert (
        ds.label_names == COURSE_LABEL_NAMES == ["hero", "non-hero", "food", "spell", "side-facing"]
    )
    np.testing.assert_array_equal(ds.labels, raw_labels.argmax(1))
    np.testing.assert_array_equal(ds.images, np.load(SNAPSHOT / "sprites_1788_16x16.npy"))
    assert ds.resolution == 16


# --- layout 2: PNG per label -----------------------------------------------------------------


def test_png_folders_composite_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]  # opaque red stays red
    rgba[0, 1] = [0, 0, 0, 128]  # half-transparent black becomes mid grey
    # rgba[1:, ...] fully transparent becomes white, whatever its colour channels say.
    rgba[1, 0] = [0, 255, 0, 0]
    write_png(tmp_path / "zebra" / "a.png", rgba)
    write_png(tmp_path / "apple" / "b.png", np.full((8, 8, 4), 255, np.uint8))
    write_png(tmp_path / "apple" / "c.PNG", np.full((8, 8, 4), 255, np.uint8))
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / "zebra" / "grey.png")

    ds = load_dataset(tmp_path)

    assert ds.label_names == ["apple", "zebra"]  # sorted sub-folder names
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1])
    assert ds.resolution == 8
    zebra = ds.images[2]
    assert zebra[0, 0].tolist() == [255, 0, 0]
    assert zebra[0, 1].tolist() == [127, 127, 127]  # round(255 * (1 - 128/255))
    assert zebra[1, 0].tolist() == [255, 255, 255]
    assert (ds.images[3] == 0).all()  # greyscale without alpha is opaque


# --- layout 3: Hugging Face Hub --------------------------------------------------------------


def test_hub_dataset_downloads_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []

    def fake_snapshot_download(**kwargs: object) -> str:
        calls.append(kwargs)
        return str(SNAPSHOT)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    ds = load_dataset("hf://datasets/ashis-palai/sprites_image_dataset")

    assert calls == [{"repo_id": "ashis-palai/sprites_image_dataset", "repo_type": "dataset"}]
    assert ds.source == "hf://datasets/ashis-palai/sprites_image_dataset"
    assert ds.label_names == COURSE_LABEL_NAMES
    assert len(ds) == 6


def test_hub_snapshot_searched_for_nested_png_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "README.md").write_text("card")
    white = np.full((4, 4, 4), 255, np.uint8)
    for label in ["cat", "dog"]:
        write_png(tmp_path / "data" / "train" / label / "0.png", white)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **_: str(tmp_path))

    ds = load_dataset("hf://datasets/me/pets")
    assert ds.label_names == ["cat", "dog"]
    assert ds.source == "hf://datasets/me/pets"


def test_hub_error_becomes_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(**_: object) -> str:
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(DataError, match=r"me/missing.*Hugging Face Hub.*network unreachable"):
        load_dataset("hf://datasets/me/missing")


def test_hub_snapshot_without_sprites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "README.md").write_text("card")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **_: str(tmp_path))
    with pytest.raises(DataError, match="no sprite data found"):
        load_dataset("hf://datasets/me/empty")


@pytest.mark.parametrize("uri", ["hf://models/me/x", "hf://datasets/me", "hf://datasets/a/b/c"])
def test_bad_hub_uri(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_download(**_: object) -> str:
        raise AssertionError("should not reach the hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", must_not_download)
    with pytest.raises(DataError, match="hf://datasets/OWNER/NAME"):
        load_dataset(uri)


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "labels", "names", "bad_file", "message"),
    [
        (make_images(3)[..., 0], one_hot([0, 1, 0], 2), None, "images.npy", r"\(N, H, W, 3\)"),
        (make_images(3).astype(np.float32), one_hot([0, 1, 0], 2), None, "images.npy", "uint8"),
        (make_images(3)[:, :, :8], one_hot([0, 1, 0], 2), None, "images.npy", "square"),
        (make_images(0), np.zeros((0, 2), np.float32), None, "images.npy", "empty"),
        (make_images(3), one_hot([0, 1], 2), None, "labels.npy", "2 labels for 3 images"),
        (make_images(3), np.array([0, 1, 0]), None, "labels.npy", "one-hot"),
        (make_images(2), np.array([[1, 1], [0, 1]], np.float32), None, "labels.npy", "one-hot"),
        (make_images(2), np.array([[0.5, 0.5], [0, 1]]), None, "labels.npy", "one-hot"),
        (make_images(2), one_hot([0, 1], 2), ["a", "b", "c"], "labels.npy", "2 label columns"),
    ],
    ids=[
        "images-ndim",
        "images-float",
        "images-non-square",
        "empty",
        "label-count",
        "labels-not-2d",
        "labels-two-hot",
        "labels-soft",
        "names-count",
    ],
)
def test_bad_npy_folder(
    tmp_path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    names: list[str] | None,
    bad_file: str,
    message: str,
) -> None:
    write_npy_folder(tmp_path, images, labels, names)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(tmp_path)
    assert str(tmp_path / bad_file) in str(info.value)


def test_bad_meta_names(tmp_path: Path) -> None:
    write_npy_folder(tmp_path, make_images(2), one_hot([0, 1], 2), ["a", "a"])
    with pytest.raises(DataError, match=r"meta\.json.*duplicates"):
        load_dataset(tmp_path)


def test_bad_alt_frames(tmp_path: Path) -> None:
    folder = write_npy_folder(tmp_path, make_images(2), one_hot([0, 1], 2))
    np.save(folder / "frame1_rgb.npy", make_images(3))
    with pytest.raises(DataError, match=r"frame1_rgb\.npy"):
        load_dataset(folder)


def test_pickled_npy_is_rejected(tmp_path: Path) -> None:
    folder = write_npy_folder(tmp_path, make_images(2), one_hot([0, 1], 2))
    np.save(folder / "labels.npy", np.array([{"a": 1}, {"b": 2}], dtype=object))
    with pytest.raises(DataError, match=r"labels\.npy.*not a readable"):
        load_dataset(folder)


def test_non_square_png(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "wide.png", np.zeros((4, 8, 4), np.uint8))
    with pytest.raises(DataError, match=r"wide\.png.*square"):
        load_dataset(tmp_path)


def test_mixed_png_sizes(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "0.png", np.zeros((8, 8, 4), np.uint8))
    write_png(tmp_path / "b" / "1.png", np.zeros((16, 16, 4), np.uint8))
    with pytest.raises(DataError, match=r"1\.png.*16x16 differs from the 8x8"):
        load_dataset(tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such dataset folder"):
        load_dataset(tmp_path / "nope")


def test_file_is_not_a_folder(tmp_path: Path) -> None:
    np.save(tmp_path / "images.npy", make_images(1))
    with pytest.raises(DataError, match="got a file"):
        load_dataset(tmp_path / "images.npy")


def test_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    np.save(tmp_path / "images.npy", make_images(1))  # labels.npy missing
    with pytest.raises(DataError, match="unknown dataset format"):
        load_dataset(tmp_path)


def test_data_error_is_value_error() -> None:
    assert issubclass(DataError, ValueError)


# --- SpriteDataset ---------------------------------------------------------------------------


def make_dataset(counts: list[int], alt: bool = False) -> SpriteDataset:
    labels = np.repeat(np.arange(len(counts)), counts)
    images = make_images(len(labels))
    return SpriteDataset(
        images=images,
        labels=labels,
        label_names=[f"c{i}" for i in range(len(counts))],
        source="test",
        alt_images=255 - images if alt else None,
    )


def test_split_is_stratified_disjoint_and_deterministic() -> None:
    ds = make_dataset([100, 50, 10, 2, 1], alt=True)
    train, held = ds.split(holdout=0.2, seed=0)

    assert held.counts() == {"c0": 20, "c1": 10, "c2": 2, "c3": 1, "c4": 0}
    assert train.counts() == {"c0": 80, "c1": 40, "c2": 8, "c3": 1, "c4": 1}
    # Images are random, so each is a unique key for its row.
    keys = {img.tobytes() for img in ds.images}
    train_keys = {img.tobytes() for img in train.images}
    held_keys = {img.tobytes() for img in held.images}
    assert train_keys | held_keys == keys and not train_keys & held_keys
    np.testing.assert_array_equal(held.alt_images, 255 - held.images)

    again, _ = ds.split(holdout=0.2, seed=0)
    np.testing.assert_array_equal(again.images, train.images)
    other, _ = ds.split(holdout=0.2, seed=1)
    assert not np.array_equal(other.images, train.images)


def test_split_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="holdout"):
        make_dataset([4]).split(holdout=1.0)


def test_subset_keeps_rows_aligned() -> None:
    ds = make_dataset([3, 3], alt=True)
    sub = ds.subset([5, 0])
    np.testing.assert_array_equal(sub.images, ds.images[[5, 0]])
    np.testing.assert_array_equal(sub.labels, [1, 0])
    np.testing.assert_array_equal(sub.alt_images, ds.alt_images[[5, 0]])
    assert sub.label_names == ds.label_names and sub.label_names is not ds.label_names


def test_dataset_rejects_bad_labels() -> None:
    with pytest.raises(DataError, match="label indices"):
        SpriteDataset(make_images(2), np.array([0, 2]), ["a", "b"], "test")
    with pytest.raises(DataError, match="integer indices"):
        SpriteDataset(make_images(2), np.array([0.0, 1.0]), ["a", "b"], "test")


# --- the shipped datasets --------------------------------------------------------------------


def shared_folder(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"shared dataset {folder} is not available")
    return folder


def test_dawnlike16() -> None:
    ds = load_dataset(shared_folder("dawnlike16"))
    assert ds.resolution == 16
    assert ds.counts() == {
        "hero": 272,
        "creature": 461,
        "food": 137,
        "weapon_spell": 284,
        "item": 411,
        "terrain": 2038,
    }
    differs = (ds.alt_images != ds.images).any(axis=(1, 2, 3))
    assert differs.sum() == 1064


def test_dcss32() -> None:
    ds = load_dataset(shared_folder("dcss32"))
    assert (ds.resolution, len(ds), ds.num_labels) == (32, 2555, 6)
    assert ds.alt_images is None
