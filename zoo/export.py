"""Take a model out of Python: ONNX, TorchScript or a torch.export program, with its model card inside the file.

Usage:
    from zoo.export import export_model, verify_export, quantize_dynamic_int8, quantize_static_int8
    path = export_model("cifar_cnn_cifar10", "cnn.onnx", format="onnx")      # a zoo.load source or a model
    verify_export(path, zoo.load("cifar_cnn_cifar10"))   # {"max_abs_diff": 1e-6, "top1_agreement": 1.0, ...}
    export_model("vae_mnist", "decoder.pt2", format="exported-program", part="decoder")
    quantize_static_int8("cnn.onnx", "cnn.int8.onnx", calibration=[train_batch, ...])   # onnxruntime's quantiser

What each family exports (``part``), every graph with a dynamic batch axis named ``batch``:
    classifiers (cifar_cnn, cifar_resnet, efficientnet_*)  "classifier": images (B, C, H, W) -> logits (B, classes)
    dcgan      "generator": z (B, latent_dim) -> images (B, C, S, S) in [-1, 1]
    vae        "decoder": z (B, latent_dim) -> images (B, C, S, S) in [0, 1] (Bernoulli means);
               "encoder": images -> mu, logvar (B, latent_dim) each
    pix2pix    "generator": A (B, in_channels, S, S) -> B (B, out_channels, S, S), both in [-1, 1]
    char_lstm  "step": ids (B,), h, c (layers, B, hidden) -> logits (B, vocab), h, c (a GRU has no c)
    lstm_forecaster  "forecaster": history (B, window) -> forecast (B, horizon), in the series' units

The card's preprocessing, labels or vocabulary, metrics and the whole card travel as JSON strings under
``METADATA_KEYS``: ONNX ``metadata_props``, TorchScript ``_extra_files``, ``torch.export.save(extra_files=...)``.
ONNX goes through ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript), which handles every family
here, so the TorchScript-based exporter (deprecated upstream) is not used. TorchScript files come from
``torch.jit.trace``, which torch deprecates (it warns); prefer "exported-program" or "onnx" for new work.
onnx, onnxscript and onnxruntime are the ``export`` extra, imported only when an ONNX function runs.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

import zoo
from zoo.errors import UserError
from zoo.hub import write_atomic

Format = Literal["onnx", "torchscript", "exported-program"]
FORMATS: tuple[str, ...] = get_args(Format)
EXPORT_FORMAT = "zoo-export/1"
METADATA_KEYS = ("zoo", "preprocessing", "labels", "vocab", "metrics", "card")  # each value a JSON string
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class ExportError(UserError, ValueError):
    """A model, part or format that cannot be exported (or an artefact that cannot be read); one line says why."""


class ExportDependencyError(UserError, ImportError):
    """The optional ONNX packages are missing; the message says how to install them."""


def require(*modules: str) -> None:
    """Import ``modules`` or raise ``ExportDependencyError`` naming the ``export`` extra."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ExportDependencyError(
                f"{name} is not installed; ONNX export, verification and quantisation need the export extra: "
                f'pip install -e ".[export]" (or: pip install {" ".join(ONNX_PACKAGES)}).') from err


# ------------------------------------------------------------------------------------------------ the graphs
class _Graph(nn.Module):
    """The exported computation ``fn(*inputs)`` -> a tuple of tensors (one per output name). It holds only the
    modules ``fn`` uses, so the file carries only their weights (a generator without its discriminator)."""

    def __init__(self, fn: Callable, **modules: nn.Module):
        super().__init__()
        self.fn, self.parts = fn, nn.ModuleDict(modules)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.fn(*inputs)
        return out if isinstance(out, tuple) else (out,)


def _lstm_step(net: nn.Module) -> Callable:
    def step(ids, *state):  # ids (B,), h and c (layers, B, hidden) -> logits (B, V), h, c
        logits, new = net(ids[:, None], state[0] if len(state) == 1 else state)
        return (logits[:, -1], *(new if isinstance(new, tuple) else (new,)))

    return step


@dataclass
class GraphSpec:
    """One exportable part of a model: its graph, example inputs (batch 2) and each tensor's batch axis."""

    part: str
    graph: _Graph
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    batch_axes: dict[str, int]  # tensor name -> its batch axis (0 unless it is a recurrent state)
    meaning: dict[str, str]
    id_range: int = 0  # integer inputs (character ids) take values in [0, id_range)

    def example(self, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Random inputs of the graph's shapes with ``batch`` rows (ids drawn below the vocabulary size)."""
        g = torch.Generator().manual_seed(seed)
        out = []
        for name, x in zip(self.input_names, self.inputs):
            shape = list(x.shape)
            shape[self.batch_axes[name]] = batch
            if x.dtype == torch.int64:
                out.append(torch.randint(0, self.id_range, shape, generator=g))
            else:
                out.append(torch.randn(shape, generator=g))
        return tuple(out)


def parts(model: nn.Module) -> tuple[str, ...]:
    """The parts ``export_model`` can write for ``model``, the default first; () for a model it does not know."""
    from zoo.classifier import ImageClassifier
    from zoo.dcgan import DCGAN
    from zoo.forecaster import LSTMForecaster
    from zoo.lstm import CharLSTM
    from zoo.pix2pix import Pix2Pix
    from zoo.vae import VAE

    families = ((ImageClassifier, ("classifier",)), (DCGAN, ("generator",)), (VAE, ("decoder", "encoder")),
                (Pix2Pix, ("generator",)), (CharLSTM, ("step",)), (LSTMForecaster, ("forecaster",)))
    return next((p for cls, p in families if isinstance(model, cls)), ())


def graph_spec(model: nn.Module, part: str | None = None) -> GraphSpec:
    """The graph of ``part`` of ``model`` (None: the family's default part); ``ExportError`` if there is none."""
    choices, h = parts(model), getattr(model, "hparams", {})
    name = _name(model)
    if not choices:
        raise ExportError(f"{name}: {type(model).__name__} is not a model family zoo.export knows (classifiers, "
                          "dcgan, vae, pix2pix, char_lstm, lstm_forecaster).")
    part = part or choices[0]
    if part not in choices:
        raise ExportError(f"{name} has no exportable part {part!r}; choose one of {', '.join(choices)}.")
    modules: dict[str, nn.Module] = {"model": model}  # LightningModule methods need the whole model
    if part == "classifier":
        x = torch.zeros(2, *model.example_input_array.shape[1:])
        names, outs, fn = ("images",), ("logits",), model
        meaning = {"images": "normalised as the card's preprocessing says", "logits": "unnormalised class scores"}
    elif part == "generator" and "latent_dim" in h:  # DCGAN; z[:, :, None, None] rather than its forward's len(z)
        x = torch.zeros(2, h["latent_dim"])
        names, outs, fn = ("z",), ("images",), lambda z: model.generator(z[:, :, None, None])
        modules = {"generator": model.generator}
        meaning = {"z": "N(0, I) latents", "images": "in [-1, 1]"}
    elif part == "generator":  # pix2pix
        x = torch.zeros(2, h["in_channels"], h["image_size"], h["image_size"])
        names, outs, fn, modules = ("a",), ("b",), model.generator, {"generator": model.generator}
        meaning = {"a": "input image in [-1, 1]", "b": "translated image in [-1, 1]"}
    elif part == "decoder":
        x = torch.zeros(2, h["latent_dim"])
        names, outs, fn = ("z",), ("images",), lambda z: torch.sigmoid(model.decode(z))
        modules = {"decoder": model.decoder}
        meaning = {"z": "N(0, I) latents", "images": "Bernoulli means in [0, 1]"}
    elif part == "encoder":
        x = torch.zeros(2, h["channels"], h["image_size"], h["image_size"])
        names, outs, fn, modules = ("images",), ("mu", "logvar"), model.encode, {"encoder": model.encoder}
        meaning = {"images": "in [0, 1]", "mu": "posterior mean", "logvar": "posterior log-variance"}
    elif part == "step":
        if model.net is None:
            raise ExportError(f"{name}: the CharLSTM has no vocabulary yet (vocab=''), so it has no network to export.")
        rnn = model.net.rnn  # nn.LSTM/GRU, or their dynamic int8 versions: all have mode, num_layers, hidden_size
        states = [torch.zeros(rnn.num_layers, 2, rnn.hidden_size) for _ in range(2 if rnn.mode == "LSTM" else 1)]
        x = (torch.zeros(2, dtype=torch.int64), *states)
        names, outs = ("ids", "h", "c")[: len(x)], ("logits", "h_out", "c_out")[: len(x)]
        fn, modules = _lstm_step(model.net), {"net": model.net}
        meaning = {"ids": "character ids, id = position in vocab", "h": "state (zeros to start)",
                   "logits": "next-character scores"}
    else:  # forecaster
        window = (getattr(model, "zoo_card", None) or {}).get("data", {}).get("init_args", {}).get("window")
        x = torch.zeros(2, window or 2 * h["season"])
        names, outs, fn = ("history",), ("forecast",), model
        meaning = {"history": "the last values of the series, raw units", "forecast": "the next values, raw units"}
    inputs = x if isinstance(x, tuple) else (x,)
    axes = {n: 1 if n.startswith(("h", "c")) and part == "step" else 0 for n in (*names, *outs)}
    return GraphSpec(part, _Graph(fn, **modules), inputs, names, outs, axes, meaning, len(h.get("vocab") or ""))


def _name(model: nn.Module) -> str:
    card = getattr(model, "zoo_card", None)
    return card["name"] if card else type(model).__name__


def _quantized(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


@contextmanager
def _inference(model: nn.Module):
    """Eval mode and no autograd for the duration; the model's own mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


@contextmanager
def _quiet_export():
    """Silence warnings that torch and torchmetrics raise about their own internals while a zoo model is exported,
    none of which the caller can act on. torch's deprecation of torch.jit itself is left to be seen."""
    with warnings.catch_warnings():
        # Non-strict torch.export of nn.LSTM/GRU: RNNBase refreshes `_flat_weights` in forward() and export restores
        # it afterwards, so nothing leaks; pytorch/pytorch#163809 made the former error this warning on purpose.
        warnings.filterwarnings("ignore", message=r"The tensor attributes? .*_flat_weights.* assigned during export",
                                category=UserWarning)
        # torch.export's own generated guards (the LSTM's sizes) call a helper torch plans to rename.
        warnings.filterwarnings("ignore", message=r"_check_is_size will be removed", category=FutureWarning)
        # torch.jit.trace: the (dynamic int8) RNNs' shape checks compare sizes in Python (constant for a trace, and
        # the traced graph still takes any batch: verify_export runs it on another batch size), and probing every
        # attribute of the model's metric modules reads torchmetrics' deprecated `Metric.update_called` property.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning,
                                module=r"torch\.(ao\.)?nn\.(quantized\.dynamic\.)?modules\.rnn")
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=r"This property will be removed in 2\.0\.0\. Use `Metric\.updated_called`")
        yield


@contextmanager
def _lightning_traceable():
    # torch.jit.trace probes every attribute of a submodule, and LightningModule.trainer raises outside a Trainer;
    # Lightning's own to_torchscript() sets this class flag for the same reason (lightning.pytorch.core.module).
    import lightning as L

    L.LightningModule._jit_is_scripting = True
    try:
        yield
    finally:
        L.LightningModule._jit_is_scripting = False


# ------------------------------------------------------------------------------------------------- metadata
def metadata(model: nn.Module, spec: GraphSpec, format: str, exporter: str) -> dict[str, str]:
    """The JSON strings written under ``METADATA_KEYS``: what the graph is, and the card's essentials."""
    card = getattr(model, "zoo_card", None) or {}
    h = dict(getattr(model, "hparams", {}))

    def shape(name: str, x: torch.Tensor) -> list:
        dims: list = list(x.shape)
        dims[spec.batch_axes[name]] = "batch"
        return dims

    with _inference(model):
        outputs = spec.graph(*spec.inputs)
    labels = (card.get("classes") or h.get("class_names")) if spec.part == "classifier" else None
    preprocessing = card.get("preprocessing") or (dict(model.data_config) if hasattr(model, "data_config") else None)
    info = {
        "format": EXPORT_FORMAT, "name": card.get("name"), "model": card.get("model") or _registered_name(model),
        "part": spec.part, "file_format": format, "exporter": exporter, "torch": torch.__version__,
        "zoo_version": zoo.__version__, "hparams": {k: v for k, v in h.items() if not k.startswith("_")},
        "inputs": [{"name": n, "shape": shape(n, x), "dtype": str(x.dtype).removeprefix("torch."),
                    "meaning": spec.meaning.get(n, "")} for n, x in zip(spec.input_names, spec.inputs)],
        "outputs": [{"name": n, "shape": shape(n, y), "meaning": spec.meaning.get(n, "")}
                    for n, y in zip(spec.output_names, outputs)],
    }
    if _quantized(model):
        info["quantization"] = {"tool": "torch.ao.quantization.quantize_dynamic", "weights": "int8",
                                "activations": "quantised on the fly", "layers": "LSTM, GRU, Linear"}
    if spec.part == "classifier" and h.get("tta"):
        info["note"] = (f"the card's metrics use test-time augmentation level {h['tta']}; this graph is the plain "
                        "forward pass (zoo.classifier.tta_logits averages it over flips and shifts)")
    values = {"zoo": info, "preprocessing": preprocessing, "labels": labels,
              "vocab": h.get("vocab") if spec.part == "step" else None, "metrics": card.get("metrics") or {},
              "card": card or None}
    return {k: json.dumps(values[k], default=str) for k in METADATA_KEYS}


def _registered_name(model: nn.Module) -> str | None:
    for name in zoo.list_models():
        entry = zoo.model_entry(name)
        if type(model) is entry.cls and all(model.hparams.get(k) == v for k, v in entry.fixed.items()):
            return name
    return None


def detect_format(path: str | os.PathLike) -> str:
    """"onnx", "torchscript" or "exported-program", from the file's contents (not its name)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"No exported model at {path}.")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/archive_format") for n in names):
            return "exported-program"
        if any("/code/" in n for n in names):
            return "torchscript"
        raise ExportError(f"{path}: a zip archive, but neither a TorchScript nor a torch.export file.")
    return "onnx"


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON-decoded metadata of an exported file (ONNX ``metadata_props``, or the zip's ``extra/`` files)."""
    path = Path(path)
    if detect_format(path) == "onnx":
        require("onnx")
        import onnx

        try:
            raw = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception as err:  # DecodeError: not a protobuf
            raise ExportError(f"{path}: not an ONNX, TorchScript or torch.export file ({type(err).__name__}).") from err
    else:  # both are zips that keep _extra_files / extra_files as <archive>/extra/<name>
        with zipfile.ZipFile(path) as z:
            raw = {n.split("/extra/", 1)[1]: z.read(n).decode() for n in z.namelist() if "/extra/" in n}
    return {k: json.loads(v) for k, v in raw.items() if k in METADATA_KEYS}


# --------------------------------------------------------------------------------------------------- export
def _as_model(model_or_source: nn.Module | str | os.PathLike) -> nn.Module:
    return model_or_source if isinstance(model_or_source, nn.Module) else zoo.load(model_or_source)


def _dynamic_shapes(spec: GraphSpec) -> tuple[tuple[dict[int, Any], ...]]:
    # One entry, for _Graph.forward's *inputs. One named Dim for the first input; the others' batch axes are found
    # equal to it (Dim.DYNAMIC), so the ONNX file names it "batch" once instead of warning that a second "batch"
    # name goes unused.
    batch = torch.export.Dim("batch")
    return (tuple({spec.batch_axes[n]: batch if i == 0 else torch.export.Dim.DYNAMIC}
                  for i, n in enumerate(spec.input_names)),)


def _one_line(err: BaseException) -> str:
    """``Type: first line`` of the innermost cause (the exporters wrap the real error in pages of advice)."""
    while err.__cause__ is not None:
        err = err.__cause__
    first = (re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first[:300]}"


def export_model(model_or_source: nn.Module | str | os.PathLike, out_path: str | os.PathLike,
                 format: Format = "onnx", part: str | None = None, opset: int | None = None) -> Path:
    """Write ``part`` of a model (a module, or any ``zoo.load`` source) to ``out_path`` as ``format``.

    Args:
        model_or_source: a zoo LightningModule (e.g. ``zoo.load(...)``, ``quantize_dynamic_int8(...)``) or a source.
        out_path: the file to write (replaced atomically); its suffix is yours to choose (.onnx, .pt, .pt2).
        format: "onnx" (torch.onnx.export with dynamo=True), "torchscript" (torch.jit.trace) or
            "exported-program" (torch.export.save).
        part: which graph (see the module docstring); None: the family's default.
        opset: ONNX opset (ONNX only); None: the exporter's default (20 with torch 2.14).

    Returns:
        ``out_path`` as a Path.

    Raises:
        ExportError: the model, part or format cannot be exported (one line says why).
        ExportDependencyError: ONNX export without the ``export`` extra.
    """
    if format not in FORMATS:
        raise ExportError(f"Unknown export format {format!r}; choose one of {', '.join(FORMATS)}.")
    model = _as_model(model_or_source)
    spec = graph_spec(model, part)
    if _quantized(model) and format != "torchscript":
        raise ExportError(f"{_name(model)}: a dynamically quantised model exports as torchscript only (torch.export, "
                          f"which {format} goes through, cannot trace torch.ao's packed int8 weights); for int8 ONNX "
                          "use quantize_static_int8 on the fp32 ONNX file.")
    out = Path(out_path)
    if format == "exported-program" and out.suffix != ".pt2":
        raise ExportError(f"{out}: torch.export files must end in .pt2 (torch.export.load refuses other names).")
    if format == "onnx":
        require(*ONNX_PACKAGES)
    exporter = {"onnx": "torch.onnx.export(dynamo=True)", "torchscript": "torch.jit.trace",
                "exported-program": "torch.export.export"}[format]
    meta = metadata(model, spec, format, exporter)

    def write(tmp: Path) -> None:
        with _inference(model), _quiet_export():
            spec.graph.eval()
            if format == "onnx":
                program = torch.onnx.export(spec.graph, spec.inputs, dynamo=True, verbose=False, opset_version=opset,
                                            dynamic_shapes=_dynamic_shapes(spec), input_names=spec.input_names,
                                            output_names=spec.output_names)
                program.model.metadata_props.update(meta)
                program.save(str(tmp), external_data=False)
            elif format == "torchscript":
                with _lightning_traceable():
                    traced = torch.jit.trace(spec.graph, spec.inputs, check_trace=False)
                torch.jit.save(traced, str(tmp), _extra_files=meta)
            else:
                program = torch.export.export(spec.graph, spec.inputs, dynamic_shapes=_dynamic_shapes(spec))
                torch.export.save(program, str(tmp), extra_files=meta)

    try:
        write_atomic(out, write)
    except Exception as err:
        if isinstance(err, UserError):
            raise
        raise ExportError(f"{_name(model)} ({spec.part}) could not be exported as {format}: {_one_line(err)}") from err
    return out


# --------------------------------------------------------------------------------------------- run and verify
def load_export(path: str | os.PathLike) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The exported file as a function of tensors, run where a user would run it: an onnxruntime
    InferenceSession (CPU), ``torch.jit.load`` or ``torch.export.load``. Returns a tuple of output tensors."""
    path, fmt = Path(path), detect_format(path)
    if fmt == "onnx":
        require("onnxruntime")
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run_onnx(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            feeds = {n: x.detach().cpu().numpy() for n, x in zip(names, inputs)}
            return tuple(torch.from_numpy(y) for y in session.run(None, feeds))

        return run_onnx
    module = torch.jit.load(str(path), map_location="cpu") if fmt == "torchscript" else torch.export.load(
        str(path)).module()

    def run_torch(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad(), _quiet_export():  # an exported LSTM's guards call torch's soon-renamed _check_is_size
            out = module(*inputs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    return run_torch


def verify_export(path: str | os.PathLike, model: nn.Module | str, inputs: Sequence[torch.Tensor] | None = None,
                  ) -> dict[str, Any]:
    """Run the exported file in its runtime and ``model`` in PyTorch on the same ``inputs`` and compare.

    Args:
        path: a file written by ``export_model`` (its metadata names the part).
        model: the PyTorch model it came from (or a ``zoo.load`` source).
        inputs: the graph's inputs, in order; None: random ones with a batch of 3 (the file was traced with 2,
            so this also checks the dynamic batch axis).

    Returns:
        ``{"format", "part", "max_abs_diff", "top1_agreement" (classifiers, char LSTM), "batch", "bytes"}``.
    """
    fmt, meta = detect_format(path), read_metadata(path)
    model = _as_model(model)
    spec = graph_spec(model, meta["zoo"]["part"])
    inputs = tuple(inputs) if inputs is not None else spec.example(3)
    with _inference(model):
        expected = spec.graph(*inputs)
    got = load_export(path)(*inputs)
    if len(got) != len(expected):
        raise ExportError(f"{path}: {len(got)} outputs, the model's {spec.part} has {len(expected)}.")
    result: dict[str, Any] = {
        "format": fmt, "part": spec.part, "batch": len(inputs[0]), "bytes": Path(path).stat().st_size,
        "max_abs_diff": max(float((g.float() - e.float()).abs().max()) for g, e in zip(got, expected)),
    }
    if spec.part in ("classifier", "step"):  # logits first: the predicted class / next character
        result["top1_agreement"] = float((got[0].argmax(1) == expected[0].argmax(1)).double().mean())
    return result


# ---------------------------------------------------------------------------------------------- quantisation
def quantize_dynamic_int8(model: nn.Module | str) -> nn.Module:
    """A copy of ``model`` whose LSTM/GRU and Linear layers run in dynamic int8 (weights int8, activations
    quantised on the fly), via ``torch.ao.quantization.quantize_dynamic``; export it with format="torchscript".

    torch marks ``torch.ao.quantization`` deprecated (it warns, pointing at torchao); convolutions stay fp32."""
    model = copy.deepcopy(_as_model(model)).eval()
    for module in model.modules():  # the zoo's CPU-autocast LSTM/GRU subclasses add no state, only a forward():
        for plain in (nn.LSTM, nn.GRU):  # make them the plain classes, which torch's mapping matches by exact type
            if isinstance(module, plain) and type(module) is not plain:
                module.__class__ = plain
    return torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8)


def quantize_static_int8(onnx_path: str | os.PathLike, out_path: str | os.PathLike,
                         calibration: Iterable[torch.Tensor], per_channel: bool = True) -> Path:
    """Static int8 (QDQ: int8 weights, uint8 activations with ranges from ``calibration``) of an fp32 ONNX file,
    by onnxruntime's ``quantize_static``; the metadata is carried over, with the settings under ``zoo``.

    Args:
        onnx_path: an fp32 ONNX file from ``export_model`` (one input, e.g. a classifier).
        out_path: the int8 ONNX file to write.
        calibration: input batches (tensors) shaped like the model's input, e.g. a few hundred training images
            prepared as the card's preprocessing says; min/max of every activation over them sets its range.
        per_channel: one weight scale per output channel (more accurate for convolutions).
    """
    require(*ONNX_PACKAGES)
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, out = Path(onnx_path), Path(out_path)
    meta = read_metadata(src)
    name = meta["zoo"]["inputs"][0]["name"]
    batches = iter(calibration)

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict | None:
            x = next(batches, None)
            return None if x is None else {name: x.detach().cpu().float().numpy()}

    def write(tmp: Path) -> None:
        quant_pre_process(str(src), str(tmp))  # shape inference and graph fusions, as onnxruntime recommends
        quantize_static(str(tmp), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        # a BatchNorm left unfused (after a pool) has rank-1 weights: their channel axis is 0
                        extra_options={"QDQOpTypePerChannelSupportToAxis": {"BatchNormalization": 0}})
        quantized = onnx.load(str(tmp))
        meta["zoo"]["quantization"] = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                                       "weights": "int8", "activations": "uint8", "per_channel": per_channel}
        del quantized.metadata_props[:]
        onnx.helper.set_model_props(quantized, {k: json.dumps(v) for k, v in meta.items()})
        onnx.save(quantized, str(tmp))

    try:
        write_atomic(out, write)
    except Exception as err:
        if isinstance(err, UserError):
            raise
        raise ExportError(f"{src}: static int8 quantisation failed: {_one_line(err)}") from err
    return out
