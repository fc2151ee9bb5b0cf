"""Pretrained zoo checkpoints: ``<name>.safetensors`` (weights) + ``<name>.json`` (the model card).

Usage:
    model = zoo.load("cifar_resnet_cifar10")                 # a published name
    model = zoo.load("runs/x/checkpoints/last.ckpt")         # a Lightning checkpoint (read with weights_only=True)
    model = zoo.load("https://host/cifar_resnet_cifar10.json")  # downloaded, sha256-checked, cached
    zoo export runs/x/checkpoints/last.ckpt --name my_net    # weights + card, metrics from a test run
    zoo evaluate cifar_resnet_cifar10                        # re-measure the card's metrics

Nothing here unpickles code: weights are safetensors, cards are JSON, Lightning checkpoints are read with
``torch.load(weights_only=True)``, and a card may only name a registered model and a DataModule of this package.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import tempfile
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import zoo
from zoo.errors import UserError

FORMAT = "zoo-checkpoint/1"
PUBLISHED_DIR = Path(__file__).parent / "checkpoints"

# Class paths that older cards and Lightning checkpoints name, and where those classes live now (prefix -> prefix).
RENAMED_CLASS_PATHS = {
    "datamodules.": "zoo.datamodules.",  # the DataModules were a top-level package before zoo 0.2
    "callbacks.": "zoo.callbacks.",
    "zoo.cifar_cnn.CifarResNet": "zoo.cifar_resnet.CifarResNet",  # the flagship had no file of its own
}


def current_class_path(class_path: str) -> str:
    """``class_path`` as it is spelled today (see ``RENAMED_CLASS_PATHS``)."""
    for old, new in RENAMED_CLASS_PATHS.items():
        if class_path.startswith(old):
            return new + class_path[len(old):]
    return class_path


class CheckpointError(UserError, ValueError):
    """A checkpoint or card that cannot be used; the message names the file and the problem."""


# ------------------------------------------------------------------------------------------------------ sources
def published() -> dict[str, dict]:
    """Cards of the checkpoints shipped with the zoo, by name."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(PUBLISHED_DIR.glob("*.json"))}


def hub_cache() -> Path:
    """Download cache: ``$ZOO_CACHE/hub``, else torch's hub dir (``$TORCH_HOME/hub``) ``/zoo``."""
    if os.environ.get("ZOO_CACHE"):
        return Path(os.environ["ZOO_CACHE"]).expanduser() / "hub"
    return Path(torch.hub.get_dir()) / "zoo"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, expected_sha256: str | None = None) -> Path:
    """Fetch ``url`` into the cache (once); the file only appears under its final name after its sha256 checks."""
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    dest = hub_cache() / digest / name
    if dest.is_file() and (expected_sha256 is None or sha256(dest) == expected_sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{name}.", suffix=".partial")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                h.update(block)
                out.write(block)
        if expected_sha256 is not None and h.hexdigest() != expected_sha256:
            raise CheckpointError(
                f"{url}: sha256 {h.hexdigest()} does not match the card's {expected_sha256}; the download is "
                "corrupt or the file changed. Nothing was cached; try again or check the source."
            )
        os.replace(tmp, dest)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(f"Could not download {url}: {err}") from err
        raise
    return dest


def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https", "file")


def resolve(source: str | os.PathLike) -> tuple[dict | None, Path]:
    """Find the card (if any) and the weights file for ``source``; download both when it is a URL."""
    source = str(source)
    if source in published():
        card = _read_card(PUBLISHED_DIR / f"{source}.json")
        return card, _weights_of(card, PUBLISHED_DIR)
    if _is_url(source):
        if source.endswith(".json"):
            card = _read_card(download(source))
            base = source.rsplit("/", 1)[0]
            url = card["weights"].get("url") or f"{base}/{card['weights']['file']}"
            return card, download(url, card["weights"]["sha256"])
        return None, download(source)
    path = Path(source).expanduser()
    if path.is_dir():
        cards = sorted(path.glob("*.json"))
        if len(cards) != 1:
            raise CheckpointError(f"{path} holds {len(cards)} cards (*.json); pass the one to load.")
        path = cards[0]
    if not path.exists():
        raise CheckpointError(
            f"No checkpoint {source!r}: not a published name ({', '.join(published()) or 'none'}), "
            "not an existing file or folder, not an http(s)/file URL."
        )
    if path.suffix == ".json":
        card = _read_card(path)
        return card, _weights_of(card, path.parent)
    if path.suffix == ".safetensors" and path.with_suffix(".json").is_file():
        card = _read_card(path.with_suffix(".json"))
        if card["weights"]["file"] == path.name:
            return card, _weights_of(card, path.parent)  # verified against the card's sha256
    return None, path


def _read_card(path: Path) -> dict:
    try:
        card = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable model card ({err}).") from err
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a zoo model card (expected \"format\": \"{FORMAT}\").")
    return card


def _weights_of(card: dict, folder: Path) -> Path:
    local = folder / card["weights"]["file"]
    if local.is_file():
        actual = sha256(local)
        if actual != card["weights"]["sha256"]:
            raise CheckpointError(
                f"{local}: sha256 {actual} does not match its card's {card['weights']['sha256']}; the file is "
                "corrupt or was replaced. Re-download or re-export it."
            )
        return local
    if card["weights"].get("url"):
        return download(card["weights"]["url"], card["weights"]["sha256"])
    raise CheckpointError(f"{local} is missing and the card gives no URL for it.")


# ------------------------------------------------------------------------------------------------------ loading
def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(state_dict, Lightning hyper_parameters or None) from a .safetensors or Lightning .ckpt file."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path)), None
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: not a valid safetensors file ({err}); it may be truncated.") from err
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for code-carrying pickles, RuntimeError/EOFError for damaged zips
        raise CheckpointError(
            f"{path}: refused or unreadable checkpoint ({type(err).__name__}: {str(err).splitlines()[0]}). "
            "Checkpoints are read with torch.load(weights_only=True), so files carrying code are never executed."
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict').")
    return ckpt["state_dict"], dict(ckpt.get("hyper_parameters") or {})


def _entry_for(model: str | None, class_path: str | None, hparams: dict, where: Path) -> zoo.ModelEntry:
    if model is not None:
        try:
            return zoo.model_entry(model)
        except KeyError as err:
            raise CheckpointError(f"{where}: {err.args[0]}") from err
    class_path = current_class_path(class_path or "")
    for name in zoo.list_models():
        entry = zoo.model_entry(name)
        if f"{entry.cls.__module__}.{entry.cls.__qualname__}" == class_path and all(
            hparams.get(k, v) == v for k, v in entry.fixed.items()
        ):
            return entry
    raise CheckpointError(
        f"{where}: cannot tell which zoo model it holds (class {class_path!r} is not registered). "
        "Pass model=<registered name>."
    )


def build(entry: zoo.ModelEntry, hparams: dict, overrides: dict, where: Path):
    """Instantiate a registered model from primitive hyperparameters (unknown keys are an error, not ignored)."""
    accepted = zoo.constructor_arguments(entry.cls)
    kwargs = {**entry.fixed, **{k: v for k, v in hparams.items() if not k.startswith("_")}, **overrides}
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise CheckpointError(f"{where}: {entry.cls.__name__} takes no argument(s) {unknown}; zoo version mismatch?")
    return entry.cls(**kwargs)


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], where: Path, reinit_mismatched: bool):
    """Strict load with a clear error; mismatched shapes are re-initialised (with a warning) if allowed."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if wrong and reinit_mismatched:
        warnings.warn(f"{where}: re-initialising {wrong} (shape differs from the checkpoint, e.g. num_classes).")
        state = {k: v for k, v in state.items() if k not in wrong}
        missing = sorted(set(missing) - set(wrong))
        wrong = []
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:5]
        )
        raise CheckpointError(
            f"{where} does not fit {type(model).__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shapes [{detail}]."
        )
    model.load_state_dict(state, strict=False)


def load(source: str | os.PathLike, model: str | None = None, **overrides: Any):
    """The model stored at ``source`` (published name, path, folder, URL or Lightning .ckpt) in eval mode.

    ``overrides`` replace constructor arguments; when one changes a tensor's shape (``num_classes``), that tensor
    is re-initialised with a warning. ``model`` names the registered model for a bare weights file.
    """
    return _rebuild(*resolve(source), model, overrides, reinit_mismatched=bool(overrides))


def _rebuild(card: dict | None, path: Path, model: str | None, overrides: dict, reinit_mismatched: bool):
    """``load`` after ``resolve``: the model of ``card`` (or of the .ckpt at ``path``) with its weights, eval mode."""
    state, ckpt_hparams = read_weights(path)
    if card is not None:
        hparams, entry = card["hparams"], _entry_for(card["model"], None, {}, path)
    elif ckpt_hparams is not None:
        hparams = {k: v for k, v in ckpt_hparams.items() if k not in ("_class_path", "_instantiator")}
        entry = _entry_for(model, ckpt_hparams.get("_class_path"), hparams, path)
    else:
        raise CheckpointError(f"{path}: weights without a card ({path.with_suffix('.json').name}); cannot rebuild.")
    net = build(entry, hparams, overrides, path)
    load_weights(net, state, path, reinit_mismatched)
    net.eval()
    net.zoo_card = card
    if card is not None:  # torchvision-style: model.transforms() is the card's preprocessing
        from functools import partial

        from zoo.preprocessing import transforms

        object.__setattr__(net, "transforms", partial(transforms, card))
    return net


def init_from(model: torch.nn.Module, source: str) -> None:
    """Copy pretrained weights from ``source`` into ``model`` (strict; a differently shaped head is re-initialised)."""
    _, path = resolve(source)
    state, _ = read_weights(path)
    load_weights(model, state, path, reinit_mismatched=True)


# ----------------------------------------------------------------------------------------------- export / evaluate
def _data_from_config(data_cfg: dict, **overrides: Any):
    """Instantiate the DataModule a card or training config names; only classes of this package are allowed."""
    class_path = current_class_path(data_cfg["class_path"])
    module, _, name = class_path.rpartition(".")
    if module != "zoo.datamodules" and not module.startswith("zoo.datamodules."):
        raise CheckpointError(f"Refusing DataModule {class_path!r}: only classes from the zoo's datamodules package.")
    cls = getattr(importlib.import_module(module), name)
    return cls(**{**data_cfg.get("init_args", {}), **overrides})


def run_test(model, dm, accelerator: str = "auto") -> dict[str, float]:
    """``trainer.test`` of ``model`` on the DataModule ``dm``; the logged test metrics as floats."""
    import lightning as L

    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False)
    results = trainer.test(model, datamodule=dm)[0]  # prints the same table as `zoo test`
    return {k: float(v) for k, v in results.items()}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True)
        return out.stdout.strip() or None
    except OSError:
        return None


def write_atomic(path: Path, write, mode: int = 0o644) -> None:
    """``write(tmp_path)`` into a temporary file beside ``path``, then rename it over ``path``: a killed process
    leaves either the old file or the new one, never half of one. The file gets ``mode`` (0644: readable by all).
    The temporary name keeps ``path``'s suffix (torch.export and onnx tools look at it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".partial{path.suffix}")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export(
    ckpt: Path | str, name: str, out_dir: Path, config: Path | None = None, test: bool = True,
    licence: str | None = None, force: bool = False, hparams: dict[str, Any] | None = None,
) -> Path:
    """Write ``<out_dir>/<name>.safetensors`` and ``<name>.json`` from a Lightning checkpoint and its run config.
    ``licence`` states the training data's licence when the DataModule cannot (e.g. an arbitrary image folder).
    An existing checkpoint of that name is replaced only with ``force``. ``hparams`` changes how the trained weights
    are used (e.g. ``{"tta": 2}``, a VAE's ``{"refine_steps": 50}``), never their shapes; the card records them.

    ``ckpt`` may also be a card (a published name or a .json): the new card then keeps that card's training config
    and data, and shares its weights file when written next to it (same sha256, no copy)."""
    import yaml

    out_dir, export_hparams = Path(out_dir), dict(hparams or {})
    source_card = resolve(str(ckpt)) if str(ckpt) in published() or str(ckpt).endswith(".json") else None
    existing = [p for p in (out_dir / f"{name}.json", out_dir / f"{name}.safetensors") if p.exists()]
    if existing and not force:
        raise CheckpointError(f"{existing[0]} exists; pick another --name, or pass --force to replace it.")
    if source_card is not None:
        train_cfg, data_cfg = source_card[0]["training_config"], source_card[0]["data"]
    else:
        ckpt = Path(ckpt)
        if not ckpt.is_file():
            raise CheckpointError(f"No checkpoint file {ckpt}; runs keep theirs in runs/<run>/checkpoints/.")
        config = Path(config) if config else ckpt.parent.parent / "config.yaml"
        if not config.is_file():
            raise CheckpointError(f"No training config at {config} (LightningCLI saves config.yaml in the run "
                                  "folder); pass --config with the config the run was trained with.")
        train_cfg = yaml.safe_load(config.read_text())
        data_cfg = {"class_path": train_cfg["data"]["class_path"], "init_args": dict(train_cfg["data"]["init_args"])}
        data_cfg["init_args"]["data_dir"] = None  # machine-specific; resolved from $ZOO_DATA_DIR when evaluated
    # --set may change how the weights are used, never their shapes: a mismatch is an error, not a re-init
    net = _rebuild(*(source_card or (None, ckpt)), None, export_hparams, reinit_mismatched=False)
    dm = _data_from_config(data_cfg)
    metrics = run_test(net, dm) if test else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    if source_card is not None and source_card[1].parent.resolve() == out_dir.resolve():
        # the same tensors (--set never changes them), already next to the new card: reference them
        weights_entry = dict(source_card[0]["weights"])
    else:
        weights = out_dir / f"{name}.safetensors"
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        write_atomic(weights, lambda tmp: save_file(state, str(tmp)))
        weights_entry = {"file": weights.name, "sha256": sha256(weights), "bytes": weights.stat().st_size, "url": None}
    hparams = {k: v for k, v in net.hparams.items() if not k.startswith("_")}
    entry = _entry_for(None, f"{type(net).__module__}.{type(net).__qualname__}", hparams, out_dir)
    card = {
        "format": FORMAT,
        "name": name,
        "model": entry.name,
        "hparams": hparams,
        "weights": weights_entry,
        **(dm.card_info() if hasattr(dm, "card_info") else {}),
        **({"licence": licence} if licence else {}),
        **({"preprocessing": dict(net.data_config)} if hasattr(net, "data_config") else {}),
        **(net.card_info() if hasattr(net, "card_info") else {}),
        "data": data_cfg,
        "metrics": metrics,
        "metrics_command": f"zoo evaluate {name}",
        "training_config": train_cfg,
        **({"derived_from": source_card[0]["name"]} if source_card is not None else {}),
        **({"export_hparams": export_hparams} if export_hparams else {}),
        "zoo_version": zoo.__version__,
        "git_commit": _git_commit(),
    }
    text = json.dumps(card, indent=2, default=str) + "\n"
    write_atomic(out_dir / f"{name}.json", lambda tmp: tmp.write_text(text))
    return out_dir / f"{name}.json"


def evaluate(source: str, accelerator: str = "auto", data_dir: str | None = None, add_missing: bool = False,
             ) -> list[tuple[str, float, float]]:
    """Re-run the card's test and return (metric, card value, measured value) rows. ``add_missing``: metrics the test
    logs but the card lacks (e.g. macro-F1 and per-class accuracy on a card older than them) are measured from the
    same, sha256-checked weights and written into a published card (atomically); its values are only compared."""
    net = load(source)
    card = net.zoo_card
    if card is None:
        raise CheckpointError(f"{source}: no model card, so there is nothing to reproduce; use `zoo export` first.")
    overrides = {"data_dir": data_dir} if data_dir else {}
    measured = run_test(net, _data_from_config(card["data"], **overrides), accelerator)
    rows = [(k, v, measured.get(k, float("nan"))) for k, v in card["metrics"].items()]
    new = {k: v for k, v in measured.items() if k not in card["metrics"]}
    path = PUBLISHED_DIR / f"{card['name']}.json"
    if add_missing and new and path.is_file():
        stored = json.loads(path.read_text())
        stored["metrics"] = {**stored["metrics"], **{k: round(v, 6) for k, v in new.items()}}
        write_atomic(path, lambda tmp: tmp.write_text(json.dumps(stored, indent=2) + "\n"))
        print(f"added {len(new)} metrics to {path}: {', '.join(sorted(new))}")
    return rows
