"""Paired images for image-to-image translation (pix2pix) as a LightningDataModule.

Usage:
    dm = PairedImageDataModule("pix2pix_people_outline", layout="ab", load_size=143, crop_size=128)
    dm = PairedImageDataModule("cifar10-jpg", layout="grayscale", load_size=32, crop_size=32)  # colourisation
    # zoo fit --config configs/pix2pix_people_cpu.yaml

Layouts under ``data_dir/folder``, one sub-folder per split (``train/``, ``val/``, ``test/``):
  * ``"ab"``: each file holds A | B side by side, the original pix2pix datasets' format;
  * ``"separate"``: ``<split>/A/<name>`` and ``<split>/B/<name>``, paired by file name;
  * ``"grayscale"`` / ``"edges"``: any images under ``<split>/`` (at any depth, e.g. class folders) are B, and A is
    derived from B after augmentation: its luminance (colourisation) or its Sobel edge map (edges -> photo), so any
    image collection makes a paired dataset;
  * ``"auto"``: ``"separate"`` when ``train/A`` and ``train/B`` exist, else ``"ab"``.
With no ``val/`` folder, ``val_size`` training files are held out (seeded); with no ``test/`` folder, test is val.

Both halves of a pair are stacked into one tensor for the resize (to ``load_size`` square, whatever the file's size
or aspect ratio), the random crop and the flip, so they cannot drift apart. Images come out in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2.functional import pil_to_tensor

from zoo.errors import UserError
from zoo.datamodules.common import known_licence, resolve_data_dir

Layout = Literal["auto", "ab", "separate", "grayscale", "edges"]


class PairedDataNotFoundError(UserError, FileNotFoundError):
    pass


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` at any depth, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def read_rgb(path: Path) -> torch.Tensor:
    """uint8 (3, H, W)."""
    with Image.open(path) as im:
        return pil_to_tensor(im.convert("RGB"))


def split_ab(ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, H, W) holding A | B side by side -> A, B (C, H, W // 2); an odd last column is dropped."""
    half = ab.shape[-1] // 2
    return ab[..., :half], ab[..., half : 2 * half]


def grayscale(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (1, H, W) luminance (ITU-R 601, as PIL's "L" mode)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype).view(3, 1, 1)
    return (rgb * weights).sum(0, keepdim=True)


def edges(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (1, H, W) edge drawing: dark Sobel edges of the luminance on white."""
    gray = grayscale(rgb)[None]  # (1, 1, H, W)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    mag = torch.sqrt(F.conv2d(padded, kx) ** 2 + F.conv2d(padded, kx.transpose(2, 3)) ** 2)[0]
    return 1 - (mag / mag.amax().clamp(min=1e-6)).clamp(0, 1)


def joint_transform(ab: torch.Tensor, load_size: int, crop_size: int, train: bool) -> torch.Tensor:
    """Resize (C, H, W) to ``load_size`` square, then crop ``crop_size`` (random + random flip when ``train``, else
    central). All channels move together, so stacked A and B stay aligned."""
    if ab.shape[-2:] != (load_size, load_size):
        ab = F.interpolate(ab[None], size=(load_size, load_size), mode="bilinear", antialias=True,
                           align_corners=False)[0].clamp(0, 1)
    if train:
        top, left = torch.randint(0, load_size - crop_size + 1, (2,)).tolist()
    else:
        top = left = (load_size - crop_size) // 2
    ab = ab[:, top : top + crop_size, left : left + crop_size]
    if train and torch.rand(()) < 0.5:
        ab = ab.flip(-1)
    return ab


class PairedImages(Dataset):
    """``(A, B)`` in [-1, 1] (plus the file's stem when ``with_names``) from a list of sources: a path ("ab" and the
    derived layouts) or an (A path, B path) tuple ("separate")."""

    def __init__(self, items: list, layout: str, direction: str, load_size: int, crop_size: int, train: bool,
                 with_names: bool = False):
        self.items, self.layout, self.direction = items, layout, direction
        self.load_size, self.crop_size, self.train, self.with_names = load_size, crop_size, train, with_names

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        derived = self.layout in ("grayscale", "edges")
        if self.layout == "separate":
            a, b = read_rgb(item[0]), read_rgb(item[1])
            if a.shape != b.shape:  # resize A onto B's grid so the two can be stacked
                a = F.interpolate(a[None].float(), size=b.shape[-2:], mode="bilinear", antialias=True)[0]
        elif self.layout == "ab":
            a, b = split_ab(read_rgb(item))
        else:
            a, b = None, read_rgb(item)
        if self.direction == "BtoA" and not derived:
            a, b = b, a
        stacked = b if derived else torch.cat([a, b])
        stacked = joint_transform(stacked.float() / 255, self.load_size, self.crop_size, self.train)
        if derived:
            b = stacked
            a = grayscale(b) if self.layout == "grayscale" else edges(b)
            if self.direction == "BtoA":
                a, b = b, a
        else:
            a, b = stacked[:3], stacked[3:]
        out = (a * 2 - 1, b * 2 - 1)
        name = Path(item[1] if isinstance(item, tuple) else item).stem
        return (*out, name) if self.with_names else out


class PairedImageDataModule(L.LightningDataModule):
    """Paired (A, B) images for pix2pix-style models; see the module docstring for the layouts.

    Args:
        folder: the dataset folder, relative to ``data_dir`` (or absolute).
        data_dir: where ``folder`` lives; default ``$ZOO_DATA_DIR``, else ``./data``.
        layout: "auto", "ab", "separate", "grayscale" or "edges" (see above).
        direction: "AtoB" translates A into B; "BtoA" the other way.
        load_size: side every image is resized to before cropping.
        crop_size: side of the (random, in training) square crop the model sees.
        batch_size: pairs per batch.
        val_size: training files held out for validation when there is no ``val/`` folder.
        seed: seed of that hold-out.
        num_workers: DataLoader workers (files are decoded in them).
    """

    def __init__(
        self,
        folder: str = "pix2pix_people_outline",
        data_dir: str | None = None,
        layout: Layout = "auto",
        direction: Literal["AtoB", "BtoA"] = "AtoB",
        load_size: int = 286,
        crop_size: int = 256,
        batch_size: int = 1,
        val_size: int = 500,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if crop_size > load_size:
            raise ValueError(f"crop_size ({crop_size}) must not exceed load_size ({load_size}).")
        self.save_hyperparameters()
        self.data_dir = resolve_data_dir(data_dir)
        self.layout = layout
        self.datasets: dict[str, PairedImages] = {}

    @property
    def root(self) -> Path:
        return self.data_dir / self.hparams.folder

    @property
    def channels(self) -> tuple[int, int]:
        """(A channels, B channels) after the direction is applied: derived A images have one channel."""
        a, b = (1, 3) if self.hparams.layout in ("grayscale", "edges") else (3, 3)
        return (a, b) if self.hparams.direction == "AtoB" else (b, a)

    def _items(self, split_dir: Path, layout: str) -> list:
        if layout == "separate":
            b_files = {p.name: p for p in image_files(split_dir / "B")}
            return [(a, b_files[a.name]) for a in image_files(split_dir / "A") if a.name in b_files]
        return image_files(split_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        root, h = self.root, self.hparams
        if not (root / "train").is_dir():
            raise PairedDataNotFoundError(
                f"No paired dataset at {root} (looked for {root / 'train'}). Fix: set --data.data_dir (or "
                "ZOO_DATA_DIR) to the folder holding it, and --data.folder to its name; the pix2pix datasets "
                "(facades, maps, ...) are at http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/ ; or point "
                "layout: grayscale at any folder of images to train colourisation.")
        layout = h.layout
        if layout == "auto":
            layout = "separate" if (root / "train" / "A").is_dir() and (root / "train" / "B").is_dir() else "ab"
        self.layout = layout
        items = {s: self._items(root / s, layout) for s in ("train", "val", "test") if (root / s).is_dir()}
        if not items["train"]:
            raise PairedDataNotFoundError(f"{root / 'train'} holds no {'A/B image pairs' if layout == 'separate' else 'images'}.")
        if "val" not in items:
            order = torch.randperm(len(items["train"]), generator=torch.Generator().manual_seed(h.seed)).tolist()
            held = set(order[: h.val_size])
            items["val"] = [x for i, x in enumerate(items["train"]) if i in held]
            items["train"] = [x for i, x in enumerate(items["train"]) if i not in held]
        items.setdefault("test", items["val"])
        make = lambda split, **kw: PairedImages(items[split], layout, h.direction, h.load_size,  # noqa: E731
                                                h.crop_size, **kw)
        self.datasets = {"train": make("train", train=True), "val": make("val", train=False),
                         "test": make("test", train=False), "predict": make("test", train=False, with_names=True)}

    def card_info(self) -> dict:
        h = self.hparams
        a, b = self.channels
        return {
            "dataset": h.folder,
            "layout": self.layout,
            "direction": h.direction,
            "train_split": "train" + ("" if (self.root / "val").is_dir() else
                                      f" minus {h.val_size} images held out for validation (seed {h.seed})"),
            "test_split": "test" if (self.root / "test").is_dir() else "the validation images (no test/ folder)",
            "licence": known_licence(h.folder),
            "preprocessing": {
                "image_size": [h.crop_size, h.crop_size],
                "input": f"A: (B, {a}, {h.crop_size}, {h.crop_size}) float in [-1, 1] = uint8 / 127.5 - 1, "
                         f"after resizing to {h.load_size} px",
                "output": f"B: (B, {b}, {h.crop_size}, {h.crop_size}) in [-1, 1]",
            },
        }

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.hparams.batch_size, shuffle=shuffle,
                          drop_last=shuffle and len(self.datasets[split]) > self.hparams.batch_size,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
