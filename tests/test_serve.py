"""`zoo serve` (zoo/serve.py): every endpoint and family with the published checkpoints, bad input (hand-picked and
fuzzed) answered with a 4xx and never a 500, dynamic batching, and the page in a real browser (Debian's chromium
driven by Playwright, skipped with the reason when either is missing)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="zoo serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx: pip install httpx")
pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis: pip install hypothesis")

import httpx
from conftest import SHARED_DATA
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zoo.datamodules.cifar import MEAN, STD
from zoo.datamodules.paired import edges, joint_transform

from zoo.hub import published
from zoo.serve import MAX_BODY_BYTES, build_app, open_image

CARDS = published()
FAMILY_OF_MODEL = {"cifar_cnn": "classifier", "cifar_resnet": "classifier", "efficientnet_lite0": "classifier",
                   "pix2pix": "pix2pix", "char_lstm": "char_lm", "dcgan": "gan", "vae": "vae",
                   "lstm_forecaster": "forecaster"}
CLASSIFIERS = [n for n, c in CARDS.items() if FAMILY_OF_MODEL[c["model"]] == "classifier"]
NAMES = {f: next(n for n, c in CARDS.items() if FAMILY_OF_MODEL[c["model"]] == f)
         for f in ("pix2pix", "char_lm", "gan", "vae", "forecaster")}
CIFAR_TEST = SHARED_DATA / "cifar10-jpg" / "test"
AIRLINE = SHARED_DATA / "timeseries" / "airline-passengers.csv"
# Screenshots for the README: written to docs/images/ when ZOO_SCREENSHOTS=1, else to a temporary folder (a test run
# must not leave modified files in the checkout).
DOCS_IMAGES = (Path(__file__).resolve().parents[1] / "docs" / "images" if os.environ.get("ZOO_SCREENSHOTS") else
               Path(tempfile.mkdtemp(prefix="zoo-screenshots-")))


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def photo(seed: int = 0, size=(48, 40), mode: str = "RGB") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    return encode(Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode))


def png_image(content: bytes) -> Image.Image:
    assert content[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(content))
    image.load()
    return image


@pytest.fixture(scope="module")
def client():
    """All published checkpoints in one app (its DataModules resolve the real data folder, if any, when built)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_DATA_DIR", str(SHARED_DATA))
        app = build_app()
    with TestClient(app) as c:
        yield c


def served(client, name):
    return client.app.state.models[name]


# ---------------------------------------------------------------------------------------------- server endpoints
def test_every_published_checkpoint_is_listed_with_its_card(client):
    assert client.get("/healthz").json()["status"] == "ok"
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(listed) == set(CARDS)
    for name, m in listed.items():
        assert m["family"] == FAMILY_OF_MODEL[CARDS[name]["model"]]
        assert m["metrics"] == CARDS[name]["metrics"] and m["predict"] == f"/v1/models/{name}/predict"
        card = client.get(f"/v1/models/{name}").json()
        assert card["card"]["hparams"] == CARDS[name]["hparams"] and "training_config" not in card["card"]


def test_openapi_schema_describes_each_route(client):
    schema = client.get("/openapi.json").json()
    for name in CARDS:
        assert f"/v1/models/{name}/predict" in schema["paths"]
    image_body = schema["paths"][f"/v1/models/{CLASSIFIERS[0]}/predict"]["post"]["requestBody"]["content"]
    assert {"image/*", "multipart/form-data"} <= set(image_body)
    text = schema["paths"][f"/v1/models/{NAMES['char_lm']}/predict"]["post"]["requestBody"]["content"]
    assert text["application/json"]["schema"]["$ref"].endswith("/TextRequest")


def test_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas id=\"sketch\"" in page.text
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: the page works offline


def test_unknown_model_and_wrong_method(client):
    r = client.post("/v1/models/no_such_model/predict", content=photo())
    assert r.status_code == 404 and "no_such_model" in r.json()["detail"] and CLASSIFIERS[0] in r.json()["detail"]
    assert client.get("/v1/models/no_such_model").status_code == 404
    assert client.get(f"/v1/models/{CLASSIFIERS[0]}/predict").status_code == 405


# -------------------------------------------------------------------------------------------------- classifiers
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_top_k(client, name):
    body = photo(1, size=(70, 50))
    r = client.post(f"/v1/models/{name}/predict?k=3", content=body)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    classes = CARDS[name].get("classes") or CARDS[name]["hparams"]["class_names"]
    assert len(preds) == min(3, len(classes)) and all(p["label"] == classes[p["index"]] for p in preds)
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
    multipart = client.post(f"/v1/models/{name}/predict?k=3", files={"file": ("x.png", body, "image/png")})
    assert multipart.json()["predictions"] == preds
    assert len(client.post(f"/v1/models/{name}/predict?k=1000", content=body).json()["predictions"]) == len(classes)


def test_cifar_input_is_the_datamodules_normalisation(client):
    """The flagship sees (uint8 / 255 - mean) / std with the constants its DataModule trained with."""
    s = served(client, "cifar_resnet_cifar10")
    assert s.card["preprocessing"]["mean"] == list(MEAN) and s.card["preprocessing"]["std"] == list(STD)
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = s.prepare(open_image(encode(Image.fromarray(pixels))))
    expected = (torch.from_numpy(pixels).permute(2, 0, 1) / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(
        STD).view(3, 1, 1)
    torch.testing.assert_close(x, expected)
    r = client.post("/v1/models/cifar_resnet_cifar10/predict?k=10", content=encode(Image.fromarray(pixels)))
    probs = s.model.predict_step(expected[None], 0)[0]  # the model's own predict path, flip + translate TTA
    got = {p["index"]: p["probability"] for p in r.json()["predictions"]}
    torch.testing.assert_close(torch.tensor([got[i] for i in range(10)]), probs, atol=1e-5, rtol=1e-4)


def test_fashion_mnist_input_is_padded_to_32_and_scaled_to_its_range(client):
    s = served(client, "cifar_cnn_fashion_mnist")
    x = s.prepare(open_image(photo(0, size=(28, 28), mode="L")))
    assert x.shape == (1, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.all(x[:, :2] == -1) and torch.all(x[:, :, -2:] == -1)  # black 2-px border, as the DataModule pads


@pytest.mark.skipif(not CIFAR_TEST.is_dir(), reason=f"no CIFAR-10 JPEGs at {CIFAR_TEST}")
def test_flagship_classifies_real_cifar_test_images(client):
    hits = 0
    for cls in sorted(p.name for p in CIFAR_TEST.iterdir()):
        body = (CIFAR_TEST / cls / "0000.jpg").read_bytes()
        hits += client.post("/v1/models/cifar_resnet_cifar10/predict?k=1", content=body).json()[
            "predictions"][0]["label"] == cls
    assert hits >= 7, f"{hits}/10 first test images right; the card says 90 %"


# ---------------------------------------------------------------------------------------------------- pix2pix
def test_pix2pix_photo_sketch_and_pair(client):
    url = f"/v1/models/{NAMES['pix2pix']}/predict"
    out = png_image(client.post(url, content=photo(2, size=(64, 64))).content)
    assert out.size == (32, 32) and out.mode == "RGB"
    sketch = Image.new("L", (256, 256), 255)
    sketch.paste(0, (60, 60, 200, 70))
    r = client.post(f"{url}?input=a", content=encode(sketch))
    assert r.status_code == 200 and png_image(r.content).size == (32, 32)
    square = Image.new("RGB", (64, 64), "white")
    square.paste((200, 30, 30), (16, 16, 48, 48))
    pair = png_image(client.post(f"{url}?pair=true", content=encode(square)).content)
    assert pair.size == (64, 32)
    # the left half is the input the model saw: the paired DataModule's edge map of the resized photo
    b = joint_transform(torch.from_numpy(np.array(square)).permute(2, 0, 1) / 255, 32, 32, train=False)
    expected = (edges(b)[0] * 255).round().numpy()
    assert np.abs(np.asarray(pair)[:, :32, 0] - expected).max() <= 1
    assert client.post(f"{url}?input=edges", content=encode(sketch)).status_code == 422


# ---------------------------------------------------------------------------------------------------- char LM
def test_char_lm_generates_reproducibly(client):
    url, s = f"/v1/models/{NAMES['char_lm']}/predict", served(client, NAMES["char_lm"])
    body = {"prompt": "ROMEO:\n", "length": 80, "temperature": 0.8, "top_k": 10, "seed": 3}
    first = client.post(url, json=body).json()
    assert len(first["text"]) == 80 and client.post(url, json=body).json() == first
    assert first["text"] == s.model.generate("ROMEO:\n", 80, 0.8, 10, seed=3)
    greedy = client.post(url, json={"prompt": "JULIET", "length": 20, "temperature": 0}).json()["text"]
    assert greedy == s.model.generate("JULIET", 20, 0)
    assert set(first["text"]) <= set(s.model.hparams.vocab)


@pytest.mark.parametrize("body, words", [
    ({"prompt": "naïve €"}, "outside the model's vocabulary"),
    ({"prompt": ""}, "at least 1"),
    ({"prompt": "A", "length": 10**9}, "less than or equal"),
    ({"prompt": "A", "temperature": 1e-9}, "at least 0.01"),
    ({"prompt": "A", "temperature": -1}, "greater than or equal"),
    ({"prompt": "A", "seed": -5}, "greater than or equal"),
    ({"prompt": "A", "lenght": 5}, "Extra inputs"),
    ({"prompt": 7}, "valid string"),
])
def test_char_lm_rejects_bad_requests(client, body, words):
    r = client.post(f"/v1/models/{NAMES['char_lm']}/predict", json=body)
    assert r.status_code == 422 and words in str(r.json()["detail"])


# ------------------------------------------------------------------------------------------------- GAN and VAE
@pytest.mark.parametrize("family", ["gan", "vae"])
def test_samplers_return_a_seeded_grid(client, family):
    url = f"/v1/models/{NAMES[family]}/predict"
    side = CARDS[NAMES[family]]["hparams"]["image_size"]
    grid = client.post(url, json={"seed": 5, "count": 16})
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    assert png_image(grid.content).size == (4 * side + 10, 4 * side + 10)  # make_grid: 2-px padding
    assert client.post(url, json={"seed": 5, "count": 16}).content == grid.content
    assert client.post(url, json={"seed": 6, "count": 16}).content != grid.content
    assert png_image(client.post(url, json={"count": 1}).content).size == (side, side)
    for bad in ({"count": 0}, {"count": 10**6}, {"seed": 2**64}, {"seed": "x"}, {"sed": 1}):
        assert client.post(url, json=bad).status_code == 422


# -------------------------------------------------------------------------------------------------- forecaster
@pytest.mark.skipif(not AIRLINE.is_file(), reason=f"no airline series at {AIRLINE}")
def test_forecaster_continues_the_airline_series(client):
    name, s = NAMES["forecaster"], served(client, NAMES["forecaster"])
    series = client.get(f"/v1/models/{name}/series").json()["series"]
    assert len(series) == 144 and sum(series) == 40363
    r = client.post(f"/v1/models/{name}/predict", json={"series": series, "steps": 24}).json()
    assert len(r["forecast"]) == len(r["seasonal_naive"]) == 24 and r["window"] == 24
    first = s.model(torch.tensor(series[-24:])[None])[0, 0].item()
    assert r["forecast"][0] == pytest.approx(first, rel=1e-5)
    assert r["seasonal_naive"][:12] == series[-12:]
    assert 300 < min(r["forecast"]) and max(r["forecast"]) < 800  # the 1961 traffic, roughly


def test_forecaster_rejects_bad_series(client):
    url = f"/v1/models/{NAMES['forecaster']}/predict"
    ok = [100.0 + i for i in range(30)]
    assert client.post(url, json={"series": ok, "steps": 3}).status_code == 200
    for bad in ({"series": ok[:5]}, {"series": []}, {"series": ok, "steps": 0}, {"series": ok, "steps": 10**5},
                {"series": ok + [1e300]}, {"series": ok + ["x"]}, {"steps": 3}):
        r = client.post(url, json=bad)
        assert r.status_code == 422, (bad, r.text)
    nan = client.post(url, content=b'{"series": [' + b"1, " * 30 + b'NaN]}',
                      headers={"content-type": "application/json"})
    assert nan.status_code == 422


def test_forecaster_series_without_data_is_404(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path))
    with TestClient(build_app([NAMES["forecaster"]])) as c:
        r = c.get(f"/v1/models/{NAMES['forecaster']}/series")
    assert r.status_code == 404 and "ZOO_DATA_DIR" in r.json()["detail"]


# ------------------------------------------------------------------------------------------------- bad images
def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (8, 8), (0, 50, 100, 0)), "JPEG")


BAD_IMAGES = {
    "empty body": (b"", 400),
    "text": (b"hello, this is not an image", 415),
    "truncated png": (photo(3, size=(64, 64))[:300], 400),
    "25 megapixels": (encode(Image.new("L", (5000, 5000))), 413),
    "cmyk": (cmyk_jpeg(), 422),
    "16-bit grey": (encode(Image.new("I;16", (8, 8))), 422),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', 415),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
@pytest.mark.parametrize("name", [CLASSIFIERS[0], NAMES["pix2pix"]])
def test_bad_images_get_4xx_with_a_message(client, name, case):
    body, status = BAD_IMAGES[case]
    r = client.post(f"/v1/models/{name}/predict", content=body)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1"])
def test_grey_palette_and_transparent_images_are_accepted(client, mode):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)).convert(mode)
    assert client.post(f"/v1/models/{CLASSIFIERS[0]}/predict", content=encode(image)).status_code == 200


def test_oversized_body_and_bad_multipart(client):
    url = f"/v1/models/{CLASSIFIERS[0]}/predict"
    r = client.post(url, content=b"\0" * (MAX_BODY_BYTES + 1))
    assert r.status_code == 413 and "too large" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(MAX_BODY_BYTES // 2**20 + 2):
            yield b"\0" * 2**20

    assert client.post(url, content=chunks()).status_code == 413
    assert client.post(url, files={"image": ("x.png", photo(), "image/png")}).status_code == 422
    garbled = client.post(url, content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=x"})
    assert 400 <= garbled.status_code < 500


# ---------------------------------------------------------------------------------------------------- fuzzing
FUZZ = settings(max_examples=50, deadline=None, database=None,
                # conftest's autouse isolated_cache is function-scoped; these tests only send requests
                suppress_health_check=[HealthCheck.function_scoped_fixture])
SEEDS = [photo(7, size=(33, 31)), encode(Image.new("RGB", (40, 30), "red"), "JPEG"), encode(Image.new("L", (9, 9)),
                                                                                              "GIF")]


@st.composite
def damaged_images(draw):
    """A valid PNG, JPEG or GIF with up to 8 bytes overwritten, maybe cut short: past the format check, into the
    decoders (and, intact, on to the model)."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.one_of(st.just(len(data)), st.integers(0, len(data))))])


@FUZZ
@given(body=st.one_of(st.binary(max_size=2048), damaged_images()),
       name=st.sampled_from([*CLASSIFIERS, NAMES["pix2pix"]]),
       query=st.sampled_from(["", "?k=0", "?k=3", "?k=-1", "?k=abc", "?input=a", "?input=x", "?pair=yes"]),
       multipart=st.booleans())
def test_fuzz_image_endpoints(client, body, name, query, multipart):
    url = f"/v1/models/{name}/predict{query}"
    r = client.post(url, files={"file": ("f", body)}) if multipart else client.post(url, content=body)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.json()["detail"]


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
                    max_leaves=20)
FIELDS = ["prompt", "length", "temperature", "top_k", "seed", "count", "series", "steps"]


@FUZZ
@given(payload=st.one_of(JSON, st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=5)),
       family=st.sampled_from(["char_lm", "gan", "vae", "forecaster"]))
def test_fuzz_json_endpoints(client, payload, family):
    body = json.dumps(payload).encode()  # Python's encoder writes NaN and Infinity, as careless clients do
    r = client.post(f"/v1/models/{NAMES[family]}/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text


@FUZZ
@given(body=st.binary(max_size=256), family=st.sampled_from(["char_lm", "gan", "forecaster"]))
def test_fuzz_json_endpoints_with_raw_bytes(client, body, family):
    r = client.post(f"/v1/models/{NAMES[family]}/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text


def test_server_is_healthy_after_the_fuzzing(client):
    assert client.get("/healthz").status_code == 200
    assert client.post(f"/v1/models/{CLASSIFIERS[0]}/predict", content=photo()).status_code == 200


# ---------------------------------------------------------------------------------------------- dynamic batching
def concurrent_posts(app, url: str, bodies: list[bytes]) -> list[httpx.Response]:
    """POST every body at once (one event loop, as a server sees concurrent clients)."""

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*(c.post(url, content=b) for b in bodies))

    return asyncio.run(run())


def count_forwards(app, name: str, delay: float = 0.0) -> list[int]:
    """Wrap the model's predict_step: the batch sizes of its forward passes (after ``delay`` seconds each)."""
    model, sizes = app.state.models[name].model, []
    predict = model.predict_step

    def counted(x, batch_idx):
        sizes.append(len(x))
        time.sleep(delay)
        return predict(x, batch_idx)

    model.predict_step = counted
    return sizes


def test_concurrent_requests_are_batched_with_unchanged_answers():
    name = "cifar_cnn_cifar10"
    app = build_app([name], max_batch=8, max_wait_ms=300)
    sizes = count_forwards(app, name)
    bodies = [photo(i, size=(32, 32)) for i in range(12)]
    batched = concurrent_posts(app, f"/v1/models/{name}/predict?k=10", bodies)
    assert sum(sizes) == 12 and len(sizes) < 12 and max(sizes) == 8, sizes
    assert max(r.json()["batch_size"] for r in batched) == 8
    alone = build_app([name], max_batch=1)
    singles = [TestClient(alone).post(f"/v1/models/{name}/predict?k=10", content=b).json() for b in bodies[:3]]
    for one, together in zip(singles, batched):
        assert one["batch_size"] == 1
        for p, q in zip(one["predictions"], together.json()["predictions"]):
            assert p["index"] == q["index"] and p["probability"] == pytest.approx(q["probability"], abs=1e-5)


def test_default_batches_are_what_queued_while_the_model_was_busy():
    """No wait (max_wait_ms=0): a lone request runs at once, and requests arriving during its forward pass
    make up the next batch."""
    name = "cifar_cnn_cifar10"
    app = build_app([name])
    sizes = count_forwards(app, name, delay=0.3)
    answers = concurrent_posts(app, f"/v1/models/{name}/predict", [photo(i) for i in range(6)])
    assert all(r.status_code == 200 for r in answers) and sum(sizes) == 6 and len(sizes) < 6, sizes


def test_full_queue_and_timeouts_answer_503():
    name = "cifar_cnn_cifar10"
    app = build_app([name], max_batch=1, max_wait_ms=0, max_queue=2)
    count_forwards(app, name, delay=0.2)
    codes = [r.status_code for r in concurrent_posts(app, f"/v1/models/{name}/predict", [photo()] * 6)]
    # at least the 2 that fit the queue are answered (3 when the first was already running as the rest came)
    assert set(codes) == {200, 503} and codes.count(200) >= 2, codes
    slow = build_app([name], timeout_s=0.05)
    count_forwards(slow, name, delay=0.3)
    r = concurrent_posts(slow, f"/v1/models/{name}/predict", [photo()])[0]
    assert r.status_code == 503 and "retry" in r.json()["detail"] and r.headers["retry-after"] == "1"


# --------------------------------------------------------------------------------------------------- the page
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def live_server():
    """A real uvicorn server on 127.0.0.1 (a free port) serving one model of each family the page is tested with."""
    uvicorn = pytest.importorskip("uvicorn", reason="the browser test needs uvicorn (the serve extra)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_DATA_DIR", str(SHARED_DATA))
        app = build_app(["cifar_resnet_cifar10", NAMES["pix2pix"], NAMES["char_lm"], NAMES["gan"],
                         NAMES["forecaster"]])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield app, f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no {CHROMIUM}: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright: "
                                                                 "pip install playwright (no `playwright install`)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def first_right_image(app) -> tuple[Path, str]:
    """The first class's first CIFAR-10 test image that the flagship gets right (it is wrong on 1 in 10)."""
    s = app.state.models["cifar_resnet_cifar10"]
    for cls in sorted(p.name for p in CIFAR_TEST.iterdir()):
        path = min((CIFAR_TEST / cls).iterdir())
        with torch.inference_mode():
            probs = s.model.predict_step(s.prepare(open_image(path.read_bytes()))[None], 0)[0]
        if s.classes[int(probs.argmax())] == cls:
            return path, cls
    raise AssertionError("the flagship got every class's first test image wrong")


@pytest.mark.skipif(not CIFAR_TEST.is_dir(), reason=f"no CIFAR-10 JPEGs at {CIFAR_TEST}")
def test_page_in_a_browser(browser, live_server):  # browser first: its skip comes before a server starts
    app, url = live_server
    page = browser.new_page(viewport={"width": 1100, "height": 720})
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)

    # classify a real CIFAR-10 test image: the top bar is its class
    image, cls = first_right_image(app)
    page.goto(f"{url}/#cifar_resnet_cifar10")
    page.wait_for_selector("body[data-ready=true]")
    assert "test/acc" in page.inner_text("#metrics")
    page.set_input_files("#image-file", str(image))
    page.wait_for_selector("#bars[data-state=done]")
    labels = page.locator("#bars .bar .label").all_inner_texts()
    assert len(labels) == 5 and labels[0] == cls
    page.screenshot(path=DOCS_IMAGES / "serve_classifier.png")

    # draw on the sketch canvas and translate it
    page.select_option("#model", NAMES["pix2pix"])
    box = page.locator("#sketch").bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 200)
    page.mouse.down()
    for x, y in ((128, 50), (216, 200), (40, 200), (40, 120), (216, 120)):
        page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
    page.mouse.up()
    page.click("#translate")
    page.wait_for_selector("#p2p-out[data-state=done]")
    assert page.eval_on_selector("#p2p-out", "img => [img.naturalWidth, img.naturalHeight]") == [32, 32]
    drawn = page.evaluate("""() => { const d = document.querySelector('#sketch').getContext('2d')
        .getImageData(0, 0, 256, 256).data; let dark = 0; for (let i = 0; i < d.length; i += 4) dark += d[i] < 128;
        return dark; }""")
    assert drawn > 1000, "the strokes did not reach the canvas"
    page.screenshot(path=DOCS_IMAGES / "serve_pix2pix.png")

    # generate text with a fixed seed: the page shows what the model generates
    s = app.state.models[NAMES["char_lm"]]
    page.select_option("#model", NAMES["char_lm"])
    page.fill("#prompt", "ROMEO:\n")
    page.fill("#length", "200")
    page.fill("#gen-seed", "0")
    page.click("#generate")
    page.wait_for_selector("#text[data-state=done]")
    assert page.text_content("#text") == "ROMEO:\n" + s.model.generate("ROMEO:\n", 200, 0.8, 0, seed=0)
    page.screenshot(path=DOCS_IMAGES / "serve_text.png")

    # the seed slider redraws the GAN grid; the forecaster plots the airline series
    page.select_option("#model", NAMES["gan"])
    page.wait_for_selector("#grid[data-state=done]")
    page.fill("#seed", "42")
    page.wait_for_function("document.querySelector('#seed-value').textContent === '42'")
    page.wait_for_selector("#grid[data-state=done]")
    page.screenshot(path=DOCS_IMAGES / "serve_samples.png")
    if AIRLINE.is_file():
        page.select_option("#model", NAMES["forecaster"])
        page.wait_for_selector("#plot[data-state=done]")
        assert page.locator("#plot svg polyline.forecast").count() == 1
        page.screenshot(path=DOCS_IMAGES / "serve_forecast.png")
    assert not errors, errors


def test_zoo_serve_command_answers_and_stops(tmp_path):
    """`zoo serve NAME --port P` (the README's line) starts a real server on 127.0.0.1 that answers; SIGTERM stops it."""
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "serve", "cifar_cnn_cifar10", "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("zoo serve did not answer within 120 s")
        assert health.status_code == 200 and health.json()["models"] == ["cifar_cnn_cifar10"]
        image = io.BytesIO()
        Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image, format="PNG")
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/models/cifar_cnn_cifar10/predict?k=2",
                            content=image.getvalue(), timeout=30)
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
