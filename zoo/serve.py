"""Serve published checkpoints over HTTP: JSON and PNG endpoints per model family, and a web page at ``/``.

Usage:
    app = build_app(["cifar_resnet_cifar10", "char_lstm_tinyshakespeare_3min"])   # any zoo.load sources
    serve(["cifar_resnet_cifar10"], host="127.0.0.1", port=8000)                 # blocks; Ctrl-C stops it
    curl --data-binary @cat.jpg 'http://127.0.0.1:8000/v1/models/cifar_resnet_cifar10/predict?k=3'

Endpoints: ``GET /healthz``; ``GET /v1/models`` (each model's card: name, family, metrics, inputs);
``GET /v1/models/{name}``; ``POST /v1/models/{name}/predict``; ``GET /v1/models/{name}/series`` (forecasters: the
card's own series, when its CSV is under ``$ZOO_DATA_DIR``); the OpenAPI schema at ``/openapi.json``.
What ``predict`` takes and returns depends on the family:
  * classifier: an image (raw body, or multipart field ``file``) -> the top ``k`` labels with probabilities;
  * pix2pix: an image -> PNG; ``input=photo`` derives the model's input from a photo as its training data did (the
    card's layout: Sobel edges or luminance), ``input=a`` takes the upload as that input (e.g. a drawn edge sketch);
  * char_lm: JSON ``{prompt, length, temperature, top_k, seed}`` -> ``{text}``;
  * gan / vae: JSON ``{seed, count}`` -> PNG grid;
  * forecaster: JSON ``{series, steps}`` -> the next ``steps`` values (and the seasonal-naive forecast beside them).

Inputs are prepared by the code that prepared the model's data, found through the card (``card["data"]`` names the
DataModule): CIFAR-10's ``normalize``, MNIST's ``to_range``, timm's eval transform of ``model.data_config``, the paired
DataModule's ``joint_transform``/``edges``/``grayscale``; no normalisation constant is restated here.

Classifier requests are batched dynamically (``DynamicBatcher``): concurrent requests to one model run as one
forward pass of up to ``max_batch`` images, started when it is full or ``max_wait_ms`` after its first request
arrived; at most ``max_queue`` requests wait, more get 503, and one that waits longer than ``timeout_s`` gets 503.
The default wait is 0: requests that arrive while a batch runs form the next one, which on a CPU (where a forward
pass costs about its batch size) was as fast under load as waiting 2 or 5 ms, and faster for a lone client
(benchmarks/serve_load.py). On an accelerator, where a bigger batch costs little more, a few ms can pay.
Bad input gets a 4xx with a JSON ``detail`` message, never a 500: an empty body (400), bytes that are not a PNG, JPEG,
WebP, GIF or BMP image (415), more than ``MAX_PIXELS`` pixels or ``MAX_BODY_BYTES`` bytes (413), an image that is
neither grey, RGB(A) nor palette, e.g. CMYK (422), an unknown model (404), a prompt with characters outside the
model's vocabulary or out-of-range numbers (422).

Why FastAPI + uvicorn rather than LitServe: the zoo's families want different routes (images in, PNG out; JSON in,
text out), which are plain typed FastAPI routes, each validated by its pydantic model and described in the OpenAPI
schema for free, with the static page served by the same app; LitServe's one ``decode/predict/encode`` API per
server fits one model of one kind, and its batching runs in worker processes (each holding a copy of the model) that
a 2-core machine cannot afford. The batcher below is 60 lines of asyncio, testable without a server.
"""

import asyncio
import io
import math
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import torch
from PIL import Image, ImageOps

import zoo
import zoo.hub
from zoo.errors import UserError


class MissingExtraError(UserError, ModuleNotFoundError):
    """FastAPI or uvicorn is not installed; the `zoo` command prints the message (how to install them) on one line."""


try:
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, ConfigDict, Field
except ModuleNotFoundError as err:
    raise MissingExtraError(f"zoo serve needs the serve extra ({err.name} is missing): pip install -e '.[serve]'") from err

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = 32 * 2**20  # a 20-megapixel photo as JPEG or WebP fits; larger bodies get 413 unread
MAX_PIXELS = 20_000_000  # checked from the image header, before decoding: 413 above it
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")  # decoders tried; none of them runs an external program
IMAGE_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa"}  # grey, colour, palette, with or without alpha
MNIST_SIDE = 28  # MNIST-style models' raw images are 28 x 28; their DataModule pads or resizes from there
MAX_SEED = 2**63 - 1
MAX_COUNT = 64  # images in one GAN/VAE grid


class ServeError(UserError, ValueError):
    """A checkpoint that cannot be served (no card, an unknown data family); the message says what to do."""


# --------------------------------------------------------------------------------------------- dynamic batching
class Busy(Exception):
    """The model's queue is full or the request waited past its timeout: answered 503."""


class DynamicBatcher:
    """Groups concurrent calls of ``fn`` (a batch (B, ...) -> outputs (B, ...), run in ``executor``) into batches.

    A batch starts when it holds ``max_batch`` inputs or ``max_wait_ms`` after its first input was queued, whichever
    comes first; inputs that queued while the previous batch ran go out at once. ``await batcher(x)`` returns
    ``(output row, size of the batch it ran in)`` or raises ``Busy`` when ``max_queue`` inputs already wait, or when
    no answer came within ``timeout_s`` (the input is then dropped from its batch if that has not started yet).

    Usage:
        batcher = DynamicBatcher(model.predict_step, ThreadPoolExecutor(1), max_batch=32, max_wait_ms=2)
        probs, batch_size = await batcher(x)           # x: one input (C, H, W)
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], executor: ThreadPoolExecutor, max_batch: int = 32,
                 max_wait_ms: float = 0.0, max_queue: int = 256, timeout_s: float = 30.0):
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch ({max_batch}) and max_queue ({max_queue}) must be at least 1.")
        self.fn, self.executor = fn, executor
        self.max_batch, self.max_wait, self.max_queue, self.timeout_s = max_batch, max_wait_ms / 1e3, max_queue, timeout_s
        self.batches = self.answered = 0  # forward passes run and requests answered by them, for /healthz
        self._pending: deque[tuple[torch.Tensor, asyncio.Future, float]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._wakeup: asyncio.Event | None = None

    async def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task.done():  # first call, or a new event loop (each test client has one)
            self._loop, self._wakeup, self._pending = loop, asyncio.Event(), deque()
            self._task = loop.create_task(self._work())
        if len(self._pending) >= self.max_queue:
            raise Busy(f"{self.max_queue} requests are already waiting for this model; retry later.")
        future = loop.create_future()
        self._pending.append((x, future, loop.time()))
        self._wakeup.set()
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except asyncio.TimeoutError:  # the builtin TimeoutError from Python 3.11 on
            raise Busy(f"No answer within {self.timeout_s:g} s: the model is overloaded; retry later.") from None

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = self._pending[0][2] + self.max_wait
            while len(self._pending) < self.max_batch and loop.time() < deadline:
                self._wakeup.clear()
                try:  # an Event, not a queue: a timed-out wait can lose no input
                    await asyncio.wait_for(self._wakeup.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            taken = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            live = [(x, f) for x, f, _ in taken if not f.done()]  # timed-out requests are dropped
            if not live:
                continue
            try:
                out = await loop.run_in_executor(self.executor, _inference, self.fn, torch.stack([x for x, _ in live]))
            except Exception as err:  # noqa: BLE001 - handed to each waiting request
                for _, f in live:
                    if not f.done():
                        f.set_exception(err)
                continue
            self.batches, self.answered = self.batches + 1, self.answered + len(live)
            for i, (_, f) in enumerate(live):
                if not f.done():
                    f.set_result((out[i], len(live)))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _inference(fn: Callable, *args):
    with torch.inference_mode():  # grad mode is per thread: set it in the executor's thread
        return fn(*args)


# ---------------------------------------------------------------------------------------------------- images
def open_image(data: bytes) -> Image.Image:
    """Check an uploaded image's header (format, size, channels) without decoding its pixels; HTTPException if bad."""
    if not data:
        raise HTTPException(400, "Empty body: send an image file as the request body or as the multipart field "
                                 "'file' (e.g. curl --data-binary @image.jpg URL).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise HTTPException(413, f"Image too large: at most {MAX_PIXELS / 1e6:g} megapixels.") from None
    except Image.UnidentifiedImageError:
        raise HTTPException(415, f"The body is not an image of a known format ({', '.join(IMAGE_FORMATS)}).") from None
    except Exception as err:  # noqa: BLE001 - whatever else the decoders raise, the bytes are not a usable image
        raise HTTPException(415, f"Unreadable image: {type(err).__name__}: {str(err)[:200]}") from None
    w, h = image.size
    if w * h > MAX_PIXELS:
        raise HTTPException(413, f"Image too large: {w} x {h} = {w * h / 1e6:.1f} megapixels; at most "
                                 f"{MAX_PIXELS / 1e6:g}. Resize it first.")
    if image.mode not in IMAGE_MODES:
        raise HTTPException(422, f"Unsupported image mode {image.mode} ({len(image.getbands())} channels "
                                 f"{''.join(image.getbands())}); send a grey, RGB, RGBA or palette image.")
    return image


def decode(image: Image.Image, mode: str) -> Image.Image:
    """The pixels of an opened image in ``mode`` ("RGB" or "L"): EXIF rotation applied, transparency over white."""
    try:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("LA", "La", "PA", "RGBa", "RGBA") or "transparency" in image.info:
            white = Image.new("RGBA", image.size, "white")
            white.alpha_composite(image.convert("RGBA"))
            image = white
        return image.convert(mode)
    except Exception as err:  # noqa: BLE001 - truncated or corrupt data surfaces only when the pixels are decoded
        raise HTTPException(400, f"Corrupt or truncated image: {type(err).__name__}: {str(err)[:200]}") from None


def center_square(image: Image.Image, side: tuple[int, int]) -> Image.Image:
    """The central square of ``image``, resized to ``side`` (w, h); images already that size are left untouched."""
    if image.size == tuple(side):
        return image
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return image.resize(tuple(side), Image.Resampling.BILINEAR, box=box)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """uint8 (C, H, W) of a decoded PIL image."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    return pil_to_tensor(image)


def png(images: torch.Tensor) -> bytes:
    """PNG bytes of images (B, C, H, W) in [0, 1], laid out in a near-square grid (one image: itself)."""
    from torchvision.utils import make_grid

    grid = images[0] if len(images) == 1 else make_grid(images, nrow=math.ceil(math.sqrt(len(images))), pad_value=1)
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # (H, W, C)
    out = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(out, format="PNG")
    return out.getvalue()


async def image_bytes(request: Request) -> bytes:
    """The uploaded file: the raw body, or the multipart field ``file``."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise HTTPException(422, "Multipart body without a file in the field 'file' "
                                         "(curl -F file=@image.jpg URL).")
            return await upload.read()
    return await request.body()


IMAGE_BODY = {"requestBody": {"required": True, "description": "An image: the raw file, or multipart field 'file'.",
                              "content": {"image/*": {"schema": {"type": "string", "format": "binary"}},
                                          "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                                          "multipart/form-data": {"schema": {
                                              "type": "object", "required": ["file"],
                                              "properties": {"file": {"type": "string", "format": "binary"}}}}}}}
PNG_RESPONSE = {200: {"content": {"image/png": {}}, "description": "A PNG image."}}


# ------------------------------------------------------------------------------------------- request schemas
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is a 422, not silently ignored


class TextRequest(Strict):
    prompt: str = Field("ROMEO:\n", min_length=1, max_length=2000, description="Characters of the model's vocab.")
    length: int = Field(200, ge=1, le=2000, description="Characters to generate.")
    temperature: float = Field(0.8, ge=0, le=10, description="0: greedy; otherwise at least 0.01.")
    top_k: int = Field(0, ge=0, le=100_000, description="Sample among the k likeliest characters; 0: all.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Fixes the sample; null: a fresh one.")


class TextResponse(BaseModel):
    model: str
    prompt: str
    text: str


class SampleRequest(Strict):
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the latent draw: the same seed, the same grid.")
    count: int = Field(16, ge=1, le=MAX_COUNT, description="Images in the grid.")


Value = Annotated[float, Field(ge=-1e12, le=1e12, allow_inf_nan=False)]


class ForecastRequest(Strict):
    series: list[Value] = Field(min_length=1, max_length=10_000, description="Past values, oldest first.")
    steps: int = Field(12, ge=1, le=240, description="Values to forecast after the series.")


class ForecastResponse(BaseModel):
    model: str
    forecast: list[float]
    seasonal_naive: list[float]
    window: int


class Prediction(BaseModel):
    label: str
    index: int
    probability: float


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]
    batch_size: int = Field(description="Requests answered by the forward pass this one ran in.")


# ------------------------------------------------------------------------------------------------ the models
def family(model) -> str:
    from zoo.classifier import ImageClassifier
    from zoo.dcgan import DCGAN
    from zoo.forecaster import LSTMForecaster
    from zoo.lstm import CharLSTM
    from zoo.pix2pix import Pix2Pix
    from zoo.vae import VAE

    kinds = {ImageClassifier: "classifier", Pix2Pix: "pix2pix", CharLSTM: "char_lm", DCGAN: "gan", VAE: "vae",
             LSTMForecaster: "forecaster"}
    found = next((name for cls, name in kinds.items() if isinstance(model, cls)), None)
    if found is None:
        raise ServeError(f"No serving routes for {type(model).__name__}; families served: {sorted(kinds.values())}.")
    return found


def image_input(model, card: dict, dm) -> Callable[[Image.Image], torch.Tensor]:
    """Opened image -> the classifier's input (C, H, W), prepared as its card's DataModule prepares test images."""
    from zoo.datamodules.cifar import CIFAR10DataModule
    from zoo.datamodules.image_folder import ImageFolderDataModule
    from zoo.datamodules.mnist import MNISTDataModule, to_range

    if isinstance(dm, CIFAR10DataModule):
        side = card["preprocessing"]["image_size"]  # the DataModule's images as stored; normalize() expects them
        return lambda im: dm.normalize(to_tensor(center_square(decode(im, "RGB"), side))[None])[0]
    if isinstance(dm, MNISTDataModule):  # Fashion-MNIST too: grey 28 px, padded or resized, scaled to its range
        h = dm.hparams
        return lambda im: to_range(to_tensor(center_square(decode(im, "L"), (MNIST_SIDE,) * 2)), h.image_size,
                                   h.resize, h.value_range, "none")[0]
    if isinstance(dm, ImageFolderDataModule):  # the DataModule's eval transform: timm's, from the model's config
        from timm.data import create_transform

        transform = create_transform(**model.data_config)
        return lambda im: transform(decode(im, "RGB"))
    raise ServeError(f"{card['name']}: no image preprocessing for {type(dm).__name__}.")


def pix2pix_input(model, dm, image: Image.Image, source: str) -> torch.Tensor:
    """Opened image -> A (in_channels, S, S) in [-1, 1], as the paired DataModule builds it (resize, central crop)."""
    from zoo.datamodules.paired import edges, grayscale, joint_transform

    h = dm.hparams
    derive = {"edges": edges, "grayscale": grayscale}.get(h.layout)
    if source == "photo":
        if derive is None:
            raise HTTPException(422, f"This model was trained on {h.layout!r} pairs, whose input cannot be derived "
                                     "from a photo: send its input image with input=a.")
        b = joint_transform(to_tensor(decode(image, "RGB")).float() / 255, h.load_size, h.crop_size, train=False)
        a = derive(b)
    else:
        mode = "L" if model.hparams.in_channels == 1 else "RGB"
        a = joint_transform(to_tensor(decode(image, mode)).float() / 255, h.load_size, h.crop_size, train=False)
    return a * 2 - 1


class Served:
    """One loaded checkpoint: the model, its card, its family and a one-thread executor (its calls run in turn)."""

    def __init__(self, source: str, batching: dict):
        from zoo.hub import _data_from_config

        self.model = zoo.load(source)
        self.card = self.model.zoo_card
        if not self.card:
            raise ServeError(f"{source}: no model card, so no preprocessing to serve it with; `zoo export` it first.")
        self.name, self.family = self.card["name"], family(self.model)
        self.dm = _data_from_config(self.card["data"])  # constructing a DataModule reads no data
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"zoo-{self.name}")
        self.timeout_s, self.max_queue, self.in_flight = batching["timeout_s"], batching["max_queue"], 0
        self.batcher = None
        if self.family == "classifier":
            self.prepare = image_input(self.model, self.card, self.dm)
            self.batcher = DynamicBatcher(lambda x: self.model.predict_step(x, 0), self.executor, **batching)

    async def run(self, fn: Callable, *args):
        """``fn(*args)`` in the model's thread, under inference mode; Busy past ``max_queue`` calls or ``timeout_s``."""
        if self.in_flight >= self.max_queue:
            raise Busy(f"{self.max_queue} requests are already waiting for this model; retry later.")
        self.in_flight += 1
        try:
            call = asyncio.get_running_loop().run_in_executor(self.executor, _inference, fn, *args)
            return await asyncio.wait_for(call, self.timeout_s)
        except asyncio.TimeoutError:
            raise Busy(f"No answer within {self.timeout_s:g} s: the model is overloaded; retry later.") from None
        finally:
            self.in_flight -= 1

    @property
    def classes(self) -> list[str]:
        names = self.card.get("classes") or self.card["hparams"].get("class_names")
        return list(names or map(str, range(self.model.hparams.num_classes)))

    def summary(self) -> dict:
        """What the page and ``GET /v1/models`` show: the card's headline facts and the inputs ``predict`` takes."""
        inputs: dict[str, Any] = {}
        if self.family == "classifier":
            inputs = {"image": self.card.get("preprocessing", {}), "classes": self.classes}
        elif self.family == "pix2pix":
            inputs = {"image": self.card.get("preprocessing", {}), "layout": self.dm.hparams.layout,
                      "input": ["photo", "a"] if self.dm.hparams.layout in ("edges", "grayscale") else ["a"]}
        elif self.family == "char_lm":
            inputs = {"vocab": self.model.hparams.vocab, "prompts": self.card["data"]["init_args"].get("prompts", [])}
        elif self.family in ("gan", "vae"):
            inputs = {"max_count": MAX_COUNT}
        elif self.family == "forecaster":
            inputs = {"window": self.dm.hparams.window, "series": f"/v1/models/{self.name}/series"}
        return {"name": self.name, "model": self.card["model"], "family": self.family,
                "dataset": self.card.get("dataset"), "metrics": self.card.get("metrics", {}),
                "metrics_command": self.card.get("metrics_command"), "licence": self.card.get("licence"),
                "predict": f"/v1/models/{self.name}/predict", "inputs": inputs}

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------------------------------------- the routes
def add_routes(app: FastAPI, s: Served) -> None:
    """``GET /v1/models/<name>`` and ``POST /v1/models/<name>/predict`` with the request and response types of the
    model's family (and ``GET .../series`` for a forecaster)."""
    path, model, name = f"/v1/models/{s.name}/predict", s.model, s.name

    @app.get(f"/v1/models/{name}", tags=["server"], name=f"card_{name}")
    async def card():
        return {**s.summary(), "card": {k: v for k, v in s.card.items() if k != "training_config"}}

    common = {"name": f"predict_{name}", "summary": f"{name} ({s.family}, {s.card['model']})", "tags": [s.family]}

    if s.family == "classifier":
        @app.post(path, response_model=ClassifyResponse, openapi_extra=IMAGE_BODY, **common)
        async def classify(request: Request, k: int = Query(5, ge=1, le=1000, description="Labels returned.")):
            image = open_image(await image_bytes(request))
            x = await asyncio.to_thread(s.prepare, image)
            probs, batch_size = await s.batcher(x)
            top = probs.topk(min(k, len(probs)))
            return {"model": name, "batch_size": batch_size, "predictions": [
                {"label": s.classes[i], "index": i, "probability": p} for p, i in zip(top.values.tolist(),
                                                                                      top.indices.tolist())]}

    elif s.family == "pix2pix":
        @app.post(path, response_class=Response, responses=PNG_RESPONSE, openapi_extra=IMAGE_BODY, **common)
        async def translate(request: Request,
                            input: str = Query("photo", pattern="^(photo|a)$", description=(
                                "photo: derive the model's input from a photo as its training pairs were (the "
                                "card's layout); a: the upload is that input itself, e.g. a drawn edge sketch.")),
                            pair: bool = Query(False, description="Return input | output side by side.")):
            image = open_image(await image_bytes(request))
            a = await asyncio.to_thread(pix2pix_input, model, s.dm, image, input)
            out = await s.run(lambda: model(a[None]))  # (1, out_channels, S, S) in [-1, 1]
            shown = [a.expand(out.shape[1], -1, -1), out[0]] if pair else [out[0]]
            return Response(png(torch.cat(shown, -1)[None] / 2 + 0.5), media_type="image/png")

    elif s.family == "char_lm":
        vocab = model.hparams.vocab

        @app.post(path, response_model=TextResponse, **common)
        async def generate(body: TextRequest):
            unknown = sorted(set(body.prompt) - set(vocab))
            if unknown:
                raise HTTPException(422, f"The prompt has characters outside the model's vocabulary: "
                                         f"{''.join(unknown)!r}; it knows {vocab!r}.")
            if 0 < body.temperature < 0.01:
                raise HTTPException(422, "temperature must be 0 (greedy) or at least 0.01.")
            text = await s.run(model.generate, body.prompt, body.length, body.temperature, body.top_k, body.seed)
            return {"model": name, "prompt": body.prompt, "text": text}

    elif s.family in ("gan", "vae"):
        def draw(seed: int, n: int) -> torch.Tensor:  # images (n, C, H, W) in [0, 1]
            generator = torch.Generator().manual_seed(seed)
            if s.family == "gan":
                return model.sample(n, generator) / 2 + 0.5
            return model.sample(n, torch.randn(n, model.hparams.latent_dim, generator=generator))

        @app.post(path, response_class=Response, responses=PNG_RESPONSE, **common)
        async def sample(body: SampleRequest):
            images = await s.run(draw, body.seed, body.count)
            return Response(png(images), media_type="image/png")

    elif s.family == "forecaster":
        from zoo.forecaster import seasonal_naive

        window, season = s.dm.hparams.window, model.hparams.season

        def roll(series: list[float], steps: int) -> list[float]:
            """Forecast ``steps`` values, feeding each forecast back as the newest observation."""
            history = torch.tensor(series[-window:], dtype=torch.float32)[None]  # (1, window)
            out: list[float] = []
            while len(out) < steps:
                nxt = model(history)  # (1, horizon)
                out += nxt[0].tolist()
                history = torch.cat([history, nxt], 1)[:, -window:]
            return out[:steps]

        @app.post(path, response_model=ForecastResponse, **common)
        async def forecast(body: ForecastRequest):
            if len(body.series) < max(window, season):
                raise HTTPException(422, f"Send at least {max(window, season)} values: the model reads the last "
                                         f"{window} and its seasonal-naive baseline looks {season} back.")
            values = await s.run(roll, body.series, body.steps)
            if not all(math.isfinite(v) for v in values):
                raise HTTPException(422, "The forecast overflowed; send values of a moderate size.")
            naive = seasonal_naive(torch.tensor(body.series)[None], body.steps, season)[0].tolist()
            return {"model": name, "forecast": values, "seasonal_naive": naive, "window": window}

        @app.get(f"/v1/models/{name}/series", tags=["forecaster"], name=f"series_{name}")
        async def series():
            try:
                await asyncio.to_thread(s.dm.setup)
            except (UserError, OSError, ValueError) as err:
                raise HTTPException(404, f"The card's series is not available here: {err}") from None
            return {"model": name, "series": s.dm.series.tolist(), "source": s.dm.hparams.path}


def json_safe(value):
    """``value`` with what JSON cannot hold (NaN, infinities, bytes, exceptions) replaced by short strings: a
    validation error echoes the offending input, which must not turn the 422 into a failed response."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float)):
        return value
    return repr(value)[:200]


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 (by its Content-Length, unread; or once streaming
    passes the limit), so no route ever holds more than that in memory."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._too_large(scope, receive, send)
        if length is None:  # chunked: read it here, up to the limit, then hand it on
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return
                chunks.append(message.get("body", b""))
                size, more = size + len(chunks[-1]), message.get("more_body", False)
                if size > self.max_bytes:
                    return await self._too_large(scope, receive, send)
            body, done = b"".join(chunks), False

            async def replay():
                nonlocal done
                if done:
                    return await receive()
                done = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)

    async def _too_large(self, scope, receive, send):
        detail = f"Request body too large: at most {self.max_bytes // 2**20} MiB."
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def build_app(names: list[str] | None = None, *, max_batch: int = 32, max_wait_ms: float = 0.0, max_queue: int = 256,
              timeout_s: float = 30.0) -> FastAPI:
    """A FastAPI app serving ``names`` (``zoo.load`` sources with a card; default: every published checkpoint).

    Args:
        names: checkpoints to serve; each is loaded now, so a bad name fails here.
        max_batch: most classifier requests answered by one forward pass (1: no batching).
        max_wait_ms: longest a classifier request waits for others to join its batch (0: only those that queued
            while the previous batch ran).
        max_queue: requests that may wait per model; more get 503.
        timeout_s: a request not answered within this gets 503.
    """
    batching = {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_queue": max_queue, "timeout_s": timeout_s}
    models: dict[str, Served] = {}
    for source in names or list(zoo.hub.published()):
        served = Served(source, batching)
        models.setdefault(served.name, served)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for s in models.values():
            s.close()

    app = FastAPI(title="zoo", version=zoo.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Published zoo checkpoints: classifiers, pix2pix, a character LM, GAN/VAE samplers and "
                              "a forecaster. The page at / uses these endpoints.")
    app.state.models = models
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):  # FastAPI's 422, with JSON-safe inputs
        return JSONResponse({"detail": json_safe(err.errors())}, status_code=422)

    @app.exception_handler(Busy)
    async def busy(request: Request, err: Busy):
        return JSONResponse({"detail": str(err)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def crashed(request: Request, err: Exception):  # a bug, not bad input: say so without a traceback
        return JSONResponse({"detail": f"Internal error ({type(err).__name__}); see the server log."}, status_code=500)

    @app.get("/healthz", tags=["server"])
    async def healthz():
        return {"status": "ok", "models": list(models),
                "batching": {n: {"batches": s.batcher.batches, "requests": s.batcher.answered}
                             for n, s in models.items() if s.batcher}}

    @app.get("/v1/models", tags=["server"])
    async def list_served():
        return {"models": [s.summary() for s in models.values()]}

    for s in models.values():
        add_routes(app, s)

    @app.api_route("/v1/models/{name}", methods=["GET", "POST"], include_in_schema=False)
    @app.api_route("/v1/models/{name}/{action}", methods=["GET", "POST"], include_in_schema=False)
    async def unknown(request: Request, name: str, action: str = ""):
        if name not in models:
            raise HTTPException(404, f"No model {name!r} here; served: {', '.join(models)}.")
        if action == "predict":
            raise HTTPException(405, f"{request.method} /v1/models/{name}/predict: use POST.")
        raise HTTPException(404, f"No /{action} for {name}: see GET /v1/models/{name}.")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def serve(names: list[str] | None = None, host: str = "127.0.0.1", port: int = 8000, **batching: Any) -> None:
    """Load ``names`` (default: every published checkpoint) and serve them with uvicorn until Ctrl-C.
    ``batching``: ``build_app``'s max_batch, max_wait_ms, max_queue, timeout_s."""
    try:
        import uvicorn
    except ModuleNotFoundError as err:
        raise MissingExtraError("zoo serve needs the serve extra (uvicorn is missing): pip install -e '.[serve]'") from err

    app = build_app(names, **batching)
    print(f"zoo: serving {', '.join(app.state.models)} on http://{host}:{port}/ (API schema: /openapi.json)")
    uvicorn.run(app, host=host, port=port, log_level="info", ws="none")
