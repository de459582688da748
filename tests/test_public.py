"""Running in public: what an untrusted model folder, upload, request or caller cannot do.

Model folders are checked before anything is allocated; training reports bad data and resume
flags in one line; uploads are checked before decoding; one caller cannot take the server.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from tests

import io
import json
import logging
import re
import shutil
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image, ImageFile

from diffusion import ContextUnet, Schedule, SpriteCLIP, SpritePipeline, UnetConfig
from diffusion.model import BOUNDS, MAX_PARAMETERS
from diffusion.pipeline import WEIGHTS
from tests.test_app import tiny_pipeline
from ui import edit as edit_module
from ui import limits
from ui import sessions as sessions_module
from ui.edit import checked_editor
from ui.errors import InputError, clean_excerpt
from ui.storage import OutputStore
from ui.studio import TOO_MANY_PIXELS, Studio

ROOT = Path(__file__).resolve().parents[1]

# -- model folders ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A saved tiny label model (3 labels, channels 8 and 16) to spoil in each test."""
    torch.manual_seed(0)
    model = ContextUnet(num_labels=3, resolution=8, channels=(8, 16), emb_dim=16)
    pipe = SpritePipeline(model, Schedule.linear(T=100), ["a", "b", "c"], device="cpu")
    folder = tmp_path_factory.mktemp("model") / "tiny"
    pipe.save_pretrained(folder)
    return folder


def spoiled(model_dir: Path, tmp_path: Path, change=None, text: str | None = None) -> Path:
    """A copy of ``model_dir`` whose config.json is ``text``, or the original changed by
    ``change(config)``."""
    folder = tmp_path / "spoiled"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    config = json.loads((model_dir / "config.json").read_text())
    if change is not None:
        change(config)
    (folder / "config.json").write_text(json.dumps(config) if text is None else text)
    return folder


def model_field(name, value):
    return lambda config: config["model"].__setitem__(name, value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (model_field("channels", [100000, 100000]),
         "channels must be a whole number from 1 to 1024, got 100000"),
        (model_field("emb_dim", 1e9),
         "emb_dim must be a whole number from 2 to 4096, got 1000000000.0"),
        (model_field("emb_dim", 15), "emb_dim must be even"),
        (model_field("T", 1e10), "T must be a whole number from 1 to 100000, got 10000000000.0"),
        (model_field("groups", 0), "groups must be a whole number from 1 to 1024, got 0"),
        (model_field("groups", 3), "every channel count must be divisible by groups=3"),
        (model_field("num_labels", "3"),
         "num_labels must be a whole number from 1 to 4096, got '3'"),
        (model_field("num_labels", True),
         "num_labels must be a whole number from 1 to 4096, got True"),
        (model_field("resolution", 2), "resolution must be a whole number from 4 to 256, got 2"),
        (model_field("resolution", 9), r"resolution 9 must be divisible by 2\^1"),
        (model_field("in_channels", 5), r"in_channels must be 3 \(RGB\) or 4 \(RGBA\), got 5"),
        (model_field("text_dim", -1), "text_dim must be a whole number from 0 to 4096, got -1"),
        (model_field("attention", [7]),
         "attention levels must be a whole number from 0 to 1, got 7"),
        (model_field("attention", 1), "attention must be a list of whole numbers, got 1"),
        (model_field("channels", [8] * 7),
         r"the number of levels \(channels\) must be a whole number from 1 to 6, got 7"),
        (model_field("self_condition", "yes"), "self_condition must be true or false"),
        (model_field("prediction", "x0"),
         r"prediction must be one of \('eps', 'v', 'edm'\), got 'x0'"),
        (model_field("colour", "red"), r"the model config has unknown fields \['colour'\]"),
        (lambda c: c.__setitem__("model", [8, 16]),
         "the model config must be a JSON object, got list"),
        (lambda c: c["schedule"].__setitem__("T", 1e10),
         "schedule T must be a whole number from 1 to 100000"),
        (lambda c: c["schedule"].__setitem__("kind", "magic"), "unknown schedule kind 'magic'"),
        (lambda c: c["schedule"].__setitem__("beta_end", 2.0), r"every beta must lie in \(0, 1\)"),
        (lambda c: c["schedule"].__setitem__("shape", 2),
         "schedule 'linear': .*unexpected keyword argument 'shape'"),
        (lambda c: c.__setitem__("schedule", "linear"), "schedule must be a JSON object"),
        (lambda c: c.__setitem__("labels", ["a", "b"]),
         "2 labels, but the model's num_labels is 3"),
        (lambda c: c.__setitem__("labels", ["a", "a", "b"]), "labels has duplicates"),
        (lambda c: c.__setitem__("labels", "abc"), "labels must be a list of label names"),
        (lambda c: c.__setitem__("sampling", [1]), "sampling must be a JSON object"),
        (lambda c: c.__setitem__("palette", ["red"]),
         "palette must be a list of colours like '#1a2b3c'"),
    ],
)  # fmt: skip
def test_a_bad_config_is_refused_with_its_field_before_anything_is_built(
    model_dir: Path, tmp_path: Path, monkeypatch, change, message: str
):
    folder = spoiled(model_dir, tmp_path, change)
    built = []
    monkeypatch.setattr(ContextUnet, "__init__", lambda *a, **k: built.append(1))
    with pytest.raises(ValueError, match=f"config.json: {message}"):
        SpritePipeline.from_pretrained(folder)
    assert built == []  # not even on the meta device: the config alone was enough


@pytest.mark.parametrize(
    ("text", "message"),
    [("[1, 2, 3]", "expected a JSON object, got a list"), ("{oops", "not valid JSON")],
)
def test_a_config_that_is_no_json_object_is_refused(model_dir, tmp_path, text, message):
    with pytest.raises(ValueError, match=f"config.json: {message}"):
        SpritePipeline.from_pretrained(spoiled(model_dir, tmp_path, text=text))


def test_a_label_count_that_the_weights_do_not_have_is_refused_from_the_header(
    model_dir: Path, tmp_path: Path, monkeypatch
):
    def two_labels(config):
        config["model"]["num_labels"], config["labels"] = 2, ["a", "b"]

    folder = spoiled(model_dir, tmp_path, two_labels)
    monkeypatch.setattr(safetensors.torch, "load_model", lambda *a, **k: pytest.fail("read"))
    with pytest.raises(
        ValueError,
        match=r"model\.safetensors: the weights were trained with 3 labels, but config\.json has 2",
    ):
        SpritePipeline.from_pretrained(folder)


def test_weights_of_another_network_are_refused_from_the_header(model_dir, tmp_path, monkeypatch):
    folder = spoiled(model_dir, tmp_path, model_field("channels", [16, 32]))
    monkeypatch.setattr(safetensors.torch, "load_model", lambda *a, **k: pytest.fail("read"))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "model.safetensors: stem.weight is (8, 3, 3, 3), but config.json's network needs "
            "(16, 3, 3, 3)"
        ),
    ):
        SpritePipeline.from_pretrained(folder)
    folder = spoiled(model_dir, tmp_path / "b", model_field("self_condition", True))
    with pytest.raises(ValueError, match=r"stem\.weight is"):
        SpritePipeline.from_pretrained(folder)
    folder = spoiled(model_dir, tmp_path / "c", model_field("attention", [1]))
    with pytest.raises(ValueError, match=r"not the network config.json describes \(missing \["):
        SpritePipeline.from_pretrained(folder)


def test_a_network_over_the_weight_budget_is_refused_without_allocating(model_dir, tmp_path):
    huge = {"channels": [1024] * 6, "blocks_per_level": 8, "resolution": 64, "emb_dim": 4096}
    assert UnetConfig(**huge).parameter_count() > MAX_PARAMETERS
    folder = spoiled(model_dir, tmp_path, lambda config: config["model"].update(huge))
    with pytest.raises(ValueError, match=f"the most a model may have is {MAX_PARAMETERS:,}"):
        SpritePipeline.from_pretrained(folder)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused(model_dir: Path, tmp_path: Path, bad: float):
    folder = spoiled(model_dir, tmp_path)
    state = safetensors.torch.load_file(folder / "model.safetensors")
    state["label_emb.weight"][0, 1] = bad
    safetensors.torch.save_file(state, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"label_emb\.weight holds NaN or infinite values"):
        SpritePipeline.from_pretrained(folder)


def test_a_garbled_weights_file_is_named(model_dir: Path, tmp_path: Path):
    folder = spoiled(model_dir, tmp_path)
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        SpritePipeline.from_pretrained(folder)


def test_the_bounds_admit_every_shipped_model_and_the_good_folder(model_dir: Path):
    assert SpritePipeline.from_pretrained(model_dir).labels == ["a", "b", "c"]
    for config in Path(__file__).parents[1].glob("weights/*/config.json"):
        section = json.loads(config.read_text()).get("model")
        if section is not None and "channels" in section:
            unet = UnetConfig.from_dict(section)
            assert unet.parameter_count() < MAX_PARAMETERS
            assert BOUNDS["T"][0] <= unet.T <= BOUNDS["T"][1]


# -- uploads: checked before decoding, on every path -------------------------------------------


def png_bomb(path: Path, side: int = 9000) -> Path:
    """A 1-bit PNG of side x side black pixels: about 10 KB that decode to side² pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
    path.write_bytes(png + chunk(b"IEND", b""))
    return path


def bad_files(folder: Path) -> dict[str, Path]:
    """Files no upload path may decode: a bomb, a non-image, an SVG, a truncated PNG."""
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        good, "PNG"
    )
    files = {
        "bomb": png_bomb(folder / "bomb.png"),
        "text": folder / "notes.png",
        "svg": folder / "sprite.svg",
        "truncated": folder / "cut.png",
    }
    files["text"].write_text("not a picture")
    files["svg"].write_text('<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"/>')
    files["truncated"].write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    return files


@pytest.fixture
def no_big_decode(monkeypatch):
    """Fail any decode of a picture larger than the upload limit."""
    load = ImageFile.ImageFile.load

    def guarded_load(image):
        assert image.width * image.height <= limits.MAX_UPLOAD_PIXELS, "a bomb was decoded"
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", guarded_load)


def test_the_editor_refuses_bad_files_as_forward_does(tmp_path: Path, no_big_decode):
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData

    editor = checked_editor(type="numpy", image_mode="RGBA")
    studio = Studio({"tiny": tiny_pipeline()}, OutputStore(tmp_path / "out"))
    files = bad_files(tmp_path)
    assert files["bomb"].stat().st_size < 20_000
    for name, path in files.items():
        with pytest.raises(InputError) as forward:
            studio.upload("tiny", str(path))
        start = time.perf_counter()
        with pytest.raises(InputError) as edit:
            editor.preprocess(EditorData(background=FileData(path=str(path)), layers=[]))
        assert time.perf_counter() - start < 1.0, name
        assert edit.value.message == forward.value.message, name
    # The header check's sentence, whether it or Pillow's own bound (set at launch) caught it.
    assert TOO_MANY_PIXELS in editor_refusal(editor, files["bomb"])
    assert "not an image we can read" in editor_refusal(editor, files["svg"])


def editor_refusal(editor, path: Path) -> str:
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData

    with pytest.raises(InputError) as refused:
        editor.preprocess(EditorData(background=FileData(path=str(path)), layers=[]))
    return refused.value.message


def test_pictures_sent_ahead_of_an_edit_are_bounded(tmp_path: Path, monkeypatch):
    from gradio.components.image_editor import AcceptBlobs

    monkeypatch.setattr(edit_module, "EDITOR_PENDING_BYTES", 200_000)
    editor = checked_editor(type="numpy", image_mode="RGBA")
    picture = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (256, 256, 4), np.uint8)).save(
        picture, "PNG"
    )
    blob = picture.getvalue()  # about 260 KB of noise
    for i in range(5):
        data = {"type": "layer", "index": 1, "id": f"edit{i}", "file": b""}
        editor.accept_blobs(AcceptBlobs(data=data, files=[("layer", blob[:100_000])]))
    assert list(editor.blob_storage) == ["edit3", "edit4"]  # the oldest went first
    with pytest.raises(InputError, match="at most 4 layers"):
        data = {"type": "layer", "index": 10**9, "id": "huge", "file": b""}
        editor.accept_blobs(AcceptBlobs(data=data, files=[("layer", blob)]))
    with pytest.raises(InputError, match="more than 16,777,216 pixels"):
        bomb = png_bomb(tmp_path / "b.png").read_bytes()
        data = {"type": "background", "index": None, "id": "bomb", "file": b""}
        editor.accept_blobs(AcceptBlobs(data=data, files=[("background", bomb)]))
    assert "huge" not in editor.blob_storage and "bomb" not in editor.blob_storage


# -- one caller cannot take the server ----------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, demo): the app on a free port, behind one (pretended) proxy: X-Forwarded-For names
    the caller."""
    import app
    from tests.test_app import free_port

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sessions_module, "PROXY_HOPS", 1)
        demo = app.build_demo({"tiny": tiny_pipeline()}, OutputStore(tmp_path_factory.mktemp("o")))
        port = free_port()
        app.launch(
            demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
        )
        yield f"http://127.0.0.1:{port}", demo
        demo.close()


@pytest.fixture(scope="module")
def server(served) -> str:
    return served[0]


GOOD = {"label": "hero", "sampler": "ddim", "steps": 2, "guidance": 2.0, "seed": 0, "n": 1}


def call(server: str, name: str, data: list | dict, address: str = "10.9.9.9") -> httpx.Response:
    """POST /gradio_api/call/<name> as raw HTTP from ``address``: ``data`` a list of every
    input, or a dict of some by name (the rest take their defaults, /call/v2)."""
    headers = {"x-forwarded-for": f"6.6.6.6, {address}"}  # the first entry is forged
    if isinstance(data, dict):
        return httpx.post(f"{server}/gradio_api/call/v2/{name}", json=data, headers=headers)
    return httpx.post(f"{server}/gradio_api/call/{name}", json={"data": data}, headers=headers)


def outcome(server: str, name: str, response: httpx.Response) -> tuple[str, str]:
    """(the last SSE event, its data) of a /call that was accepted."""
    event_id = response.json()["event_id"]
    text = httpx.get(f"{server}/gradio_api/call/{name}/{event_id}", timeout=60).text
    events = re.findall(r"event: (\w+)\ndata: (.*)", text)
    return events[-1]


def test_only_the_documented_api_answers_by_name(server: str):
    from gradio_client import Client

    named = Client(server + "/", verbose=False).view_api(print_info=False, return_format="dict")
    public = set(named["named_endpoints"])
    docs = " ".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    documented = set(re.findall(r"[`\"](/\w+)[`\"]", docs))
    assert {"/generate", "/edit", "/morph", "/compare"} <= public
    assert public <= documented, f"public but not in docs/: {public - documented}"
    for name in ("draw_sprite", "new_sprite", "first_sprite", "noised", "generate_1", "nosuch"):
        refused = call(server, name, ["tiny"])
        assert refused.status_code == 404, name
        assert refused.json()["error"].startswith(f"No API endpoint /{name} here. The API: /")
    for name in ("generate", "draw_sprite", "compare"):  # /run skips the queue: closed to them
        assert httpx.post(f"{server}/gradio_api/run/{name}", json={"data": []}).status_code == 404
    assert outcome(server, "generate", call(server, "generate", GOOD))[0] == "complete"


def helper_index(server: str, name: str) -> int:
    """The index under which the page calls its helper ``name`` (from the page's config)."""
    config = httpx.get(f"{server}/config").json()
    return next(d["id"] for d in config["dependencies"] if d["api_name"] == name)


def run_helper(server: str, body: dict, address: str = "10.7.7.7") -> httpx.Response:
    headers = {"x-forwarded-for": address}
    return httpx.post(f"{server}/gradio_api/run/predict", json=body, headers=headers, timeout=30)


def test_the_page_helpers_answer_only_as_the_page_calls_them(server: str):
    seed = helper_index(server, "random_seed")
    page = {"data": [], "fn_index": seed, "session_hash": "page1", "trigger_id": 1}
    answer = run_helper(server, page)  # what the page sends (ui/generate.py's 🎲 button)
    assert answer.status_code == 200 and isinstance(answer.json()["data"][0], int)
    for name in ("random_seed", "stop", "click", "on_sampler", "predict"):
        for route in ("run", "api"):
            if (route, name) == ("run", "predict"):
                continue
            refused = httpx.post(f"{server}/gradio_api/{route}/{name}", json=page)
            assert refused.status_code == 404, (route, name)
            assert refused.json()["error"].startswith(f"No API endpoint /{name} here.")
    generate = helper_index(server, "generate")  # a queued handler: Gradio closes /run to it
    for odd in (
        {"session_hash": None},
        {"fn_index": None},
        {"fn_index": True},
        {"fn_index": 10**6},
    ):
        refused = run_helper(server, {**page, **odd})
        assert refused.status_code == 404 and "No API endpoint /run/predict" in refused.text, odd
    assert run_helper(server, {**page, "fn_index": generate}).status_code == 404
    not_json = httpx.post(f"{server}/gradio_api/run/predict", content=b"{oops")
    assert not_json.status_code == 404


def test_helper_calls_are_bounded_per_address(server: str, monkeypatch):
    from ui import gate

    monkeypatch.setattr(gate, "MAX_HELPERS_PER_CLIENT", 2)
    press_stop = sessions_module.Sessions.press_stop

    def slow_stop(self, session):  # each Stop takes a while: the calls overlap
        time.sleep(0.5)
        press_stop(self, session)

    monkeypatch.setattr(sessions_module.Sessions, "press_stop", slow_stop)
    stop = {"data": [], "fn_index": helper_index(server, "stop"), "session_hash": "s"}
    with ThreadPoolExecutor(5) as pool:
        flood = [pool.submit(run_helper, server, stop, "10.5.5.5") for _ in range(4)]
        time.sleep(0.2)  # the flood is in, and running
        other = pool.submit(run_helper, server, stop, "10.5.5.6")
        codes = sorted(f.result().status_code for f in flood)
        assert other.result().status_code == 200
    assert codes == [200, 200, 429, 429]
    refused = next(f.result() for f in flood if f.result().status_code == 429)
    assert refused.json()["error"].startswith("Your address already has 2 requests waiting")
    assert run_helper(server, stop, "10.5.5.5").status_code == 200  # its places are free again


def test_request_bodies_over_the_bound_are_refused(server: str):
    big = b'{"data": ["' + b"x" * (limits.MAX_REQUEST_BYTES + 1) + b'"]}'
    headers = {"content-type": "application/json"}
    said = httpx.post(f"{server}/gradio_api/call/generate", content=big, headers=headers)
    assert said.status_code == 413 and "65,536 bytes" in said.json()["error"]

    def streamed():  # no Content-Length: counted as it arrives
        yield big[:1000]
        yield big[1000:]

    chunked = httpx.post(f"{server}/gradio_api/call/generate", content=streamed(), headers=headers)
    assert chunked.status_code == 413
    upload = b"\x00" * (limits.MAX_UPLOAD_BYTES + limits.MAX_REQUEST_BYTES + 1)
    files = {"files": ("big.png", upload, "image/png")}
    assert httpx.post(f"{server}/gradio_api/upload", files=files).status_code == 413
    small = {"files": ("ok.png", b"\x89PNG", "image/png")}
    assert httpx.post(f"{server}/gradio_api/upload", files=small).status_code == 200


def test_refusals_reach_raw_http_as_errors_in_a_short_clean_line(server: str, caplog):
    kind, data = outcome(server, "generate", call(server, "generate", {**GOOD, "steps": 5000}))
    assert kind == "error" and "Steps for ddim must be a whole number from 1 to 100" in data
    kind, data = outcome(server, "generate", call(server, "generate", ["hero"]))
    assert kind == "error" and "didn't receive enough input values" in data and len(data) < 300
    sneaky = "\x1b[31m\u202ehero" + "x" * 50_000  # an escape code, a right-to-left override
    with caplog.at_level(logging.INFO, logger="sprite_studio"):
        kind, data = outcome(
            server, "generate", call(server, "generate", {**GOOD, "label": sneaky})
        )
    message = json.loads(data)["error"]
    assert kind == "error" and "is not in the list of choices: ['hero'" in message
    assert len(message) < 400 and "\x1b" not in message and "\u202e" not in message
    lines = [r for r in caplog.records if "not in the list of choices" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None and len(lines[0].getMessage()) < 400


SNEAKY = "\x1b[2J\u202e" + "z" * 5000  # an escape code, a right-to-left override, and more


def helper_call(server: str, name: str, data: list) -> dict:
    return {"data": data, "fn_index": helper_index(server, name), "session_hash": "garbage"}


def editor_id(demo) -> int:
    return next(i for i, b in demo.blocks.items() if type(b).__name__ == "ImageEditor")


MALFORMED = {  # what: (route, how to send it, the status, words of the refusal)
    "an unknown keyword": (
        "/call/v2/generate", {"json": {**GOOD, "bogus": 1}}, 422,
        "/generate takes no argument 'bogus'; its arguments: label, sampler,",
    ),
    "a keyword of escape codes": (
        "/call/v2/generate", {"json": {SNEAKY: 1}}, 422, "/generate takes no argument '",
    ),
    "a required keyword left out": (
        "/call/v2/edit", {"json": {"label": "hero"}}, 422, "/edit needs the argument 'editor'",
    ),
    "keywords in a list": (
        "/call/v2/generate", {"json": [1, 2]}, 422, "body: Input should be a valid dictionary",
    ),
    "no JSON": (
        "/call/v2/generate",
        {"content": b"{oops", "headers": {"content-type": "application/json"}},
        422, "the body is not valid JSON",
    ),
    "data that is no list": (
        "/call/generate", {"json": {"data": SNEAKY}}, 422, "data: Input should be a valid list",
    ),
    "an event index that is not there": (
        "/queue/join", {"json": {"data": [], "session_hash": "s", "fn_index": 10**6}}, 400,
        "No event with index 1000000 here.",
    ),
    "a helper given garbage": (
        "/run/predict", lambda url, _: {"json": helper_call(url, "describe_sampler", [{"x": 1}])},
        400, "Value \"{'x': 1}\" is not in the list of choices: ['ddpm',",
    ),
    "a helper given too few values": (
        "/run/predict", lambda url, _: {"json": helper_call(url, "describe_sampler", [])}, 400,
        "didn't receive enough input values (needed: 1, got: 0)",
    ),
    "a helper given a huge string": (
        "/run/predict", lambda url, _: {"json": helper_call(url, "describe_sampler", [SNEAKY])},
        400, "characters) is not in the list of choices: [",
    ),
    "a helper's data that is no list": (
        "/run/predict", lambda url, _: {"json": {**helper_call(url, "random_seed", []), "data": 1}},
        422, "data: Input should be a valid list (got 1)",
    ),
    "a component call without its fields": (
        "/component_server", {"files": {"x": ("a.png", b"123")}, "data": {"session_hash": "s"}},
        400, "The page never sends this component call (KeyError: 'component_id').",
    ),
    "a component that is not there": (
        "/component_server",
        {"json": {"session_hash": "s", "component_id": 10**6, "fn_name": "x", "data": 1}},
        400, "The page never sends this component call (KeyError: 1000000).",
    ),
    "a picture layer of garbage": (
        "/component_server",
        lambda _, demo: {"json": {"session_hash": "s", "component_id": editor_id(demo),
                                    "fn_name": "accept_blobs", "data": {"x": 1}}},
        400, "The page never sends this component call (AttributeError:",
    ),
    "a picture layer that is no picture": (
        "/component_server",
        lambda _, demo: {"files": {"x": ("a.png", b"not a picture")},
                         "data": {"session_hash": "s", "component_id": str(editor_id(demo)),
                                  "fn_name": "accept_blobs", "data": "x"}},
        400, "That file is not an image we can read.",
    ),
}  # fmt: skip


@pytest.mark.parametrize("what", list(MALFORMED))
def test_a_malformed_call_is_one_short_clean_refusal_and_one_log_line(
    served, caplog, capfd, what: str
):
    route, how, status, words = MALFORMED[what]
    kwargs = how(*served) if callable(how) else how
    with caplog.at_level(logging.INFO):
        answer = httpx.post(f"{served[0]}/gradio_api{route}", timeout=30, **kwargs)
        time.sleep(0.1)  # the server's log line is written on its own thread
    assert answer.status_code == status, answer.text
    message = answer.json().get("error") or answer.json()["detail"]
    assert words in message and len(message) < 500
    assert "\x1b" not in message and "\u202e" not in message
    refusals = [r for r in caplog.records if words.split("(")[0][:30] in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in caplog.records]
    assert all(r.exc_info is None and r.levelno < logging.ERROR for r in caplog.records)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize(
    ("name", "field", "message"),
    [
        ("generate", "steps", "Steps must be a number (got True)."),
        ("generate", "eta", "Eta (fresh noise per step) must be a number from 0 to 1 (got True)."),
        ("generate", "gif_ms",
         "GIF speed (ms per frame) must be a number from 20 to 500 (got False)."),
        ("generate", "seed", "Seed must be a number (got True)."),
        ("morph", "frames", "Frames must be a number from 2 to 48 (got True)."),
        ("compare", "n", "Batch size must be a number from 1 to 16 (got True)."),
    ],
)  # fmt: skip
def test_a_json_boolean_is_no_number(server: str, caplog, name: str, field: str, message: str):
    value = "False" not in message  # JSON true is 1 to Python, false is 0
    with caplog.at_level(logging.INFO, logger="sprite_studio"):
        kind, data = outcome(server, name, call(server, name, {field: value}))  # the rest: defaults
    assert kind == "error" and json.loads(data)["error"] == message
    lines = [r for r in caplog.records if message in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None


def test_a_json_boolean_is_no_number_for_gradio_client_either(server: str):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(server + "/", verbose=False)
    with pytest.raises(AppError, match=re.escape("Steps must be a number (got True)")):
        client.predict(**{**GOOD, "steps": True}, api_name="/generate")


def test_compare_takes_the_step_counts_its_schema_advertises(server: str):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(server + "/", verbose=False)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/compare"]
    steps = next(p for p in api["parameters"] if p["parameter_name"] == "steps")
    assert steps["type"]["items"] == {"enum": [5, 10, 20, 50, 100], "type": "integer"}
    assert all(type(k) is int for k in steps["parameter_default"] + steps["example_input"])
    # gradio_client lists every choice quoted: list[Literal['5', '10', ...]]. Both are taken.
    assert steps["python_type"]["type"] == "list[Literal['5', '10', '20', '50', '100']]"
    compare = {"model": "tiny", "label": "hero", "samplers": ["ddim"], "n": 1, "seed": 3}
    for counts in ([5, 10], ["5", "10"]):
        status = client.predict(**compare, steps=counts, api_name="/compare")[0]
        assert "through ddim at 5 and 10 steps: ddim 5 steps" in status, counts
    with pytest.raises(AppError, match=r"Value .*'7'.* is not in the list of choices: \[5, 10, 20"):
        client.predict(**compare, steps=["7"], api_name="/compare")


def test_one_caller_cannot_take_the_queue(server: str, monkeypatch):
    from gradio_client import Client
    from gradio_client.exceptions import ValidationError
    from gradio_client.utils import Status

    from ui import gate

    for module in (gate, sessions_module):  # fewer runs to wait for in a test
        monkeypatch.setattr(module, "MAX_JOBS_PER_CLIENT", 3)
    slow = {**GOOD, "sampler": "ddpm", "steps": 60, "n": 4}
    flood = [call(server, "generate", slow, address="10.0.0.1") for _ in range(8)]
    accepted = [r for r in flood if r.status_code == 200]
    refused = [r for r in flood if r.status_code != 200]
    assert len(accepted) == 3 and {r.status_code for r in refused} == {400}
    assert "Your address already has 3 runs going or waiting" in refused[0].json()["detail"]
    # One session through gradio_client, from another address: 2 runs, then a clear refusal.
    one = Client(server + "/", verbose=False, headers={"x-forwarded-for": "10.0.0.2"})
    jobs = [one.submit(**slow, api_name="/generate") for _ in range(2)]
    for job in jobs:  # each has joined the queue (submit only starts joining)
        deadline = time.monotonic() + 20
        while job.status().code in (Status.STARTING, Status.JOINING_QUEUE):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    with pytest.raises(ValidationError, match="You already have 2 runs going or waiting"):
        one.predict(**slow, api_name="/generate")
    # Someone else, meanwhile, is served after the flood's few places, not after the flood.
    start = time.perf_counter()
    other = Client(server + "/", verbose=False, headers={"x-forwarded-for": "10.0.0.3"})
    status = other.predict(**{**GOOD, "label": "food"}, api_name="/generate")[1]
    waited = time.perf_counter() - start
    assert status.startswith("done: 1 × food")
    for job in jobs:
        assert job.result(timeout=60)[1].startswith("done: 4 × hero")
    assert all(outcome(server, "generate", r)[0] == "complete" for r in accepted)
    assert waited < 60
    # The flood's places are free again once its runs are done.
    assert call(server, "generate", GOOD, address="10.0.0.1").status_code == 200


def test_a_flood_from_one_session_leaves_the_queue_to_others(server: str):
    from gradio_client import Client
    from gradio_client.exceptions import ValidationError
    from gradio_client.utils import Status

    slow = {**GOOD, "sampler": "ddpm", "steps": 60, "n": 4}
    one = Client(server + "/", verbose=False, headers={"x-forwarded-for": "10.0.0.4"})
    flood = [one.submit(**slow, api_name="/generate") for _ in range(10)]  # one session
    deadline = time.monotonic() + 30
    for job in flood:  # each has joined the queue or been refused (submit only starts joining)
        while job.status().code in (Status.STARTING, Status.JOINING_QUEUE) and not job.done():
            assert time.monotonic() < deadline
            time.sleep(0.02)
    other = Client(server + "/", verbose=False, headers={"x-forwarded-for": "10.0.0.5"})
    status = other.predict(**{**GOOD, "label": "food"}, api_name="/generate")[1]
    ahead = sum(job.done() and job.exception() is None for job in flood)
    assert status.startswith("done: 1 × food")
    # The second session waited for at most the session's few runs, not for the flood.
    assert ahead <= limits.MAX_JOBS_PER_SESSION
    refused = [job for job in flood if isinstance(job.exception(timeout=60), ValidationError)]
    assert len(refused) == len(flood) - limits.MAX_JOBS_PER_SESSION
    assert "You already have 2 runs going or waiting" in str(refused[0].exception())


def test_the_handler_counts_runs_of_a_session_and_of_its_address(monkeypatch):
    monkeypatch.setattr(sessions_module, "MAX_JOBS_PER_CLIENT", 1)
    sessions = sessions_module.Sessions()
    sessions.note_client("a", "10.0.0.1")
    sessions.note_client("b", "10.0.0.1")
    sessions.note_client("c", "10.0.0.2")
    with sessions.job("a"):
        with pytest.raises(InputError, match="Your address already has 1 runs"), sessions.job("b"):
            pass
        with sessions.job("c"):  # another address is not affected
            pass
    with sessions.job("b"):  # a finished run frees its place
        pass


@pytest.mark.parametrize(
    ("hops", "forwarded", "address"),
    [
        (0, "1.2.3.4", "127.0.0.1"),  # no proxy: the header is anyone's to forge
        (1, "1.2.3.4", "1.2.3.4"),
        (1, "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # what a caller wrote before the proxy's entry
        (2, "6.6.6.6, 1.2.3.4, 10.0.0.9", "1.2.3.4"),
        (1, None, "127.0.0.1"),
    ],
)
def test_the_client_address_behind_a_proxy(monkeypatch, hops, forwarded, address):
    monkeypatch.setattr(sessions_module, "PROXY_HOPS", hops)
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    assert sessions_module.client_address("127.0.0.1", headers) == address


def test_messages_echo_a_short_excerpt_without_control_characters():
    text = clean_excerpt("\x1b[2Jhe\u202ello\n" + "y" * 1000)
    assert text.startswith("[2Jhello" + "y" * 10) and text.endswith("(1,008 characters)")
    assert len(text) < limits.MAX_TEXT + 40


# -- memory and disk: sessions expire, uploads have a budget -----------------------------------


def test_idle_sessions_are_forgotten(tmp_path: Path):
    import datetime

    import app

    demo = app.build_demo({"tiny": tiny_pipeline()}, OutputStore(tmp_path / "out"))
    holder = demo.state_holder
    holder.set_blocks(demo)
    for session in ("old", "recent"):
        holder[session]  # Gradio makes a session's copy on its first look
    holder.time_last_used["old"] -= datetime.timedelta(seconds=limits.SESSION_TTL_S + 1)
    assert sessions_module.expire_sessions(holder) == 1
    assert "old" not in holder and "recent" in holder


def test_a_flood_of_new_sessions_costs_other_visitors_nothing():
    """A full store of one-session visitors: the flood's first session takes the longest unseen
    visitor's place (as any newcomer's would), every later one its own older one's."""
    import app

    store = sessions_module.SessionStore(sessions_module.Sessions(), per_client=100)
    store.blocks = app.build_demo({"tiny": tiny_pipeline()})  # what each session copies
    store.capacity = 4
    for i in range(4):
        with sessions_module.calling_from(f"10.0.0.{i}"):
            store[f"visitor{i}"]
    for i in range(10):
        with sessions_module.calling_from("10.6.6.6"):
            store[f"flood{i}"]
    assert list(store.session_data) == ["visitor1", "visitor2", "visitor3", "flood9"]
    assert store.owner("flood9") == "10.6.6.6" and store.owner("visitor2") == "10.0.0.2"
    store.per_client, store.capacity = 2, 100
    store.sessions.note_client("queued", "10.6.6.6")  # made later, as the queue runs it
    store["queued"]
    store["flood10"]  # made outside a request and never queued: no one's
    assert store.owner("queued") == "10.6.6.6" and store.owner("flood10") == "unknown"
    with sessions_module.calling_from("10.6.6.6"):
        store["flood11"]  # the address's third: its longest unseen goes
    assert "flood9" not in store and {"queued", "flood11", "visitor1"} <= set(store.session_data)


def test_a_flood_of_new_sessions_leaves_another_visitor_served(served, monkeypatch):
    server, demo = served
    store = demo.state_holder
    assert isinstance(store, sessions_module.SessionStore)
    seed = {"data": [], "fn_index": helper_index(server, "random_seed")}
    assert run_helper(server, {**seed, "session_hash": "visitor"}, "10.3.3.1").status_code == 200
    visitor = store.session_data["visitor"]
    flooder = "10.3.3.2"

    def flood(count: int, tag: str) -> None:
        for i in range(count):  # each a new session: the page's helper, and raw /call
            run_helper(server, {**seed, "session_hash": f"{tag}{i}"}, flooder)
        for _ in range(2):
            assert outcome(server, "generate", call(server, "generate", GOOD, flooder))[0] == (
                "complete"
            )

    def held() -> int:
        return sum(store.owner(s) == flooder for s in list(store.session_data))

    monkeypatch.setattr(store, "per_client", 4)
    flood(12, "a")
    assert held() == 4 and "a0" not in store and "a11" in store  # the flood's own went
    monkeypatch.setattr(store, "per_client", 1000)
    monkeypatch.setattr(store, "capacity", len(store.session_data) + 3)
    flood(20, "b")
    assert len(store.session_data) <= store.capacity and "b0" not in store
    assert store.session_data.get("visitor") is visitor  # never dropped and made anew
    from gradio_client import Client

    client = Client(server + "/", verbose=False, headers={"x-forwarded-for": "10.3.3.1"})
    client.session_hash = "visitor"  # the visitor's page, come back for another run
    assert client.predict(**GOOD, api_name="/generate")[1].startswith("done: 1 × hero")
    assert store.session_data.get("visitor") is visitor


def test_an_upload_burst_from_one_address_is_cut_off(server: str):
    picture = b"\x89PNG" + b"\x00" * (4 * 2**20)  # 4 MB: twelve fit in the 50 MB budget
    assert limits.UPLOAD_BUDGET_BYTES == 50 * 2**20
    replies = []
    for address in ["10.1.1.1"] * 13 + ["10.1.1.2"]:
        files = {"files": ("big.png", picture, "image/png")}
        headers = {"x-forwarded-for": address}
        replies.append(httpx.post(f"{server}/gradio_api/upload", files=files, headers=headers))
    assert [r.status_code for r in replies] == [200] * 12 + [429, 200]
    assert replies[12].json()["error"].startswith("Your address has uploaded 48.0 MB in the last")


def test_a_prompt_loses_its_control_characters_before_it_is_echoed():
    from tests.test_app import tiny_text_pipeline
    from ui.run import check_prompt

    pipe = tiny_text_pipeline()
    assert check_prompt(pipe, "\x1b[2J blue\u202e \u200bpotion\x00") == "[2J blue potion"
    assert check_prompt(pipe, "\u202e\x1b") is None  # nothing left: an empty box


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vocab_size": 10**9}, "vocab_size must be a whole number from 2 to 32768"),
        ({"width": 100, "heads": 3}, "width (100) must divide into heads (3)"),
        ({"layers": "2"}, "layers must be a whole number"),
        ({"colour": 1}, "unknown settings ['colour']"),
    ],
)
def test_a_text_encoder_config_is_checked_before_it_is_built(tmp_path, change, message):
    folder = shutil.copytree(WEIGHTS / "spriteclip", tmp_path / "clip")
    config = json.loads((folder / "config.json").read_text())
    config["model"].update(change)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        SpriteCLIP.from_pretrained(folder)
    assert str(err.value).startswith(str(folder / "config.json")) and message in str(err.value)


def test_a_text_encoder_of_nan_weights_or_a_json_list_is_refused(tmp_path):
    folder = shutil.copytree(WEIGHTS / "spriteclip", tmp_path / "clip")
    weights = safetensors.torch.load_file(folder / "model.safetensors")
    name = next(iter(weights))
    weights[name] = torch.full_like(weights[name], float("nan"))
    safetensors.torch.save_file(weights, folder / "model.safetensors")
    with pytest.raises(ValueError, match="NaN or infinite"):
        SpriteCLIP.from_pretrained(folder)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object, got a list"):
        SpriteCLIP.from_pretrained(folder)
