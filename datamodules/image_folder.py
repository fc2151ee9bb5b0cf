"""Images in class folders (``root/<split>/<class>/*.jpg``) as a LightningDataModule, with the model's transforms.

Usage:
    dm = ImageFolderDataModule("hymenoptera_data", data_dir="../shared/data", precompute=True)
    dm = ImageFolderDataModule("hymenoptera_data", sampling="oversample", augment_policy="trivialaugment")
    # zoo fit --config configs/efficientnet_hymenoptera.yaml

Layouts, found automatically under ``data_dir/folder``:
  * ``train/``, ``val/`` (or ``valid/``) and optionally ``test/``, each holding one sub-folder per class;
    with no ``test/`` folder, *test uses the validation split* (hymenoptera has only train/val);
  * one folder of class sub-folders, split into train/val by a seeded permutation (``val_fraction``).

Transforms come from the model: ``setup`` reads ``trainer.lightning_module.data_config`` (timm's
resolve_data_config of its weights) and builds timm's train/eval transforms, so model and data cannot disagree;
``augment_policy`` adds torchvision's per-sample policy to the training transform, on the cropped image before
ToTensor/normalise. Its random draws, like timm's crops, come from the global RNGs of each DataLoader worker (seeded by
``seed_everything``), so unlike the CIFAR/MNIST DataModules a resumed run does not replay the same augmentation.
``precompute=True`` runs the frozen backbone once over train and val (eval transform), caches the features under
``$ZOO_CACHE/features`` and serves them while the model says its backbone is frozen, then images again.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from zoo.errors import UserError
from zoo.datamodules.augment import Policy, policy_transform
from zoo.datamodules.common import cache_dir, read_cache, resolve_data_dir, write_cache
from zoo.datamodules.sampling import BalancedSampler, Sampling, class_counts

IMAGENET_CONFIG = {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
                   "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center"}


class ImageFolderNotFoundError(UserError, FileNotFoundError):
    pass


class Files(Dataset):
    """Images from a list of paths: ``(image, path)``, for prediction."""

    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB")), str(self.paths[i])


def with_policy(transform, policy: Policy):
    """``transform`` (a Compose, e.g. timm's) with torchvision's ``policy`` inserted before its ToTensor step, where
    the image is still the (cropped) PIL image the policies expect; ImageNet's AutoAugment policy."""
    tf = policy_transform(policy, "imagenet")
    if tf is None:
        return transform
    steps = list(transform.transforms)
    at = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__), 0)
    return type(transform)(steps[:at] + [tf] + steps[at:])


def files_fingerprint(samples: list[tuple[str, int]]) -> str:
    """Identity of a list of (path, label): names, labels, sizes and mtimes."""
    h = hashlib.sha256()
    for path, label in samples:
        st = os.stat(path)
        h.update(f"{path}:{label}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class ImageFolderDataModule(L.LightningDataModule):
    """Class-folder images with the model's transforms, optional class balancing and precomputed features.

    Args:
        folder: the dataset folder, relative to ``data_dir`` (or absolute).
        data_dir: where ``folder`` lives; default ``$ZOO_DATA_DIR``, else ``./data``.
        batch_size: images (or feature vectors) per batch.
        val_fraction: share held out for validation when there is no ``val/`` folder.
        seed: seed of that split and of the balanced sampler (epoch ``e`` draws with ``seed + e``).
        balance: alias of ``sampling="oversample"``, kept for older configs.
        augment: timm's training augmentation (random resized crop, flip, colour jitter); False: eval transform.
        precompute: serve cached frozen-backbone features while the backbone is frozen (needs a model with
            ``extract_features``; with a later unfreeze, set ``trainer.reload_dataloaders_every_n_epochs: 1``).
        predict_dir: folder of images (searched recursively) for ``predict``; default: the validation images.
        num_workers: DataLoader workers.
        sampling: training order: "none" (shuffled, each image once an epoch), "oversample" (classes equally often,
            epoch of the training-set size) or "undersample" (min class count per class, a shorter epoch).
        augment_policy: "randaugment", "trivialaugment", "autoaugment" (ImageNet policy) or "augmix" in the training
            transform (torchvision's, per sample); "none": off.
    """

    def __init__(
        self,
        folder: str = "hymenoptera_data",
        data_dir: str | None = None,
        batch_size: int = 32,
        val_fraction: float = 0.2,
        seed: int = 0,
        balance: bool = False,
        augment: bool = True,
        precompute: bool = False,
        predict_dir: str | None = None,
        num_workers: int = 0,
        sampling: Sampling = "none",
        augment_policy: Policy = "none",
    ):
        super().__init__()
        self.save_hyperparameters()
        if balance and sampling == "undersample":
            raise ValueError("balance=True means sampling='oversample'; drop balance to undersample.")
        self.sampling = "oversample" if balance else sampling
        self.root = resolve_data_dir(data_dir) / folder
        self.classes: list[str] = []
        self.datasets: dict[str, Dataset] = {}
        self.features: dict[str, TensorDataset] = {}

    # ------------------------------------------------------------------------------------------------- layout
    def _split_dirs(self) -> dict[str, Path | None]:
        r = self.root
        if (r / "train").is_dir():
            val = next((r / n for n in ("val", "valid", "validation") if (r / n).is_dir()), None)
            return {"train": r / "train", "val": val, "test": r / "test" if (r / "test").is_dir() else None}
        if r.is_dir() and any(p.is_dir() for p in r.iterdir()):
            return {"train": r, "val": None, "test": None}
        raise ImageFolderNotFoundError(
            f"No image folder found. Looked for {r / 'train'}/<class>/* and {r}/<class>/*.\n"
            f"Fix: set --data.init_args.data_dir (or ZOO_DATA_DIR) to the folder that holds {r.name!r}, or "
            "--data.init_args.folder to the dataset's folder. Hymenoptera (ants/bees): unzip "
            "https://download.pytorch.org/tutorial/hymenoptera_data.zip into that folder."
        )

    def data_config(self) -> dict:
        model = self.trainer.lightning_module if self.trainer is not None else None
        return dict(getattr(model, "data_config", None) or IMAGENET_CONFIG)

    def setup(self, stage: str | None = None) -> None:
        from timm.data import create_transform

        cfg = self.data_config()
        train_tf = with_policy(create_transform(**cfg, is_training=self.hparams.augment), self.hparams.augment_policy)
        self.eval_transform = create_transform(**cfg)
        dirs = self._split_dirs()
        train_aug, train_plain = ImageFolder(dirs["train"], train_tf), ImageFolder(dirs["train"], self.eval_transform)
        self.classes = list(train_aug.classes)
        if dirs["val"] is not None:
            train, train_eval = train_aug, train_plain
            val = ImageFolder(dirs["val"], self.eval_transform)
            self._check_classes(val, dirs["val"])
        else:  # seeded split of one folder: the same files, with training or eval transforms
            order = torch.randperm(len(train_aug), generator=torch.Generator().manual_seed(self.hparams.seed))
            n_val = round(self.hparams.val_fraction * len(order))
            val_idx, train_idx = order[:n_val].tolist(), order[n_val:].tolist()
            train, train_eval, val = (Subset(train_aug, train_idx), Subset(train_plain, train_idx),
                                      Subset(train_plain, val_idx))
        if dirs["test"] is not None:
            test = ImageFolder(dirs["test"], self.eval_transform)
            self._check_classes(test, dirs["test"])
        else:
            test = val  # no test folder: test reports the validation split
        self.datasets = {"train": train, "train_eval": train_eval, "val": val, "test": test}

    def _check_classes(self, ds: ImageFolder, path: Path) -> None:
        if ds.classes != self.classes:
            raise ValueError(f"{path} has classes {ds.classes}, the training folder {self.classes}.")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> torch.Tensor:
        """Training images per class, int64 (num_classes,) (e.g. for class-weighted losses); runs ``setup`` if needed."""
        if "train" not in self.datasets:
            self.setup("fit")
        return class_counts(self._targets(self.datasets["train"]), self.num_classes)

    def card_info(self) -> dict:
        """What a model card records about this data (read from the folders; no decoding)."""
        dirs = self._split_dirs()
        return {"dataset": self.root.name, "classes": sorted(d.name for d in dirs["train"].iterdir() if d.is_dir()),
                "test_split": "test" if dirs["test"] is not None else ("val" if dirs["val"] is not None else
                                                                       f"seeded {self.hparams.val_fraction} split")}

    # ------------------------------------------------------------------------------------- precomputed features
    def _use_features(self) -> bool:
        """Features while fitting with a frozen backbone; images otherwise (and for test/predict)."""
        trainer = self.trainer
        model = trainer.lightning_module if trainer is not None else None
        if not self.hparams.precompute or model is None or trainer.state.fn != "fit":
            return False
        if not hasattr(model, "extract_features"):
            raise TypeError(f"precompute=True needs a model with extract_features(); {type(model).__name__} has none.")
        last = trainer.max_epochs - 1 if trainer.max_epochs and trainer.max_epochs > 0 else 1 << 30
        if not model.backbone_frozen(last) and trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError("precompute=True with a backbone that unfreezes during training needs "
                             "trainer.reload_dataloaders_every_n_epochs=1 (features first, then images).")
        return model.backbone_frozen(trainer.current_epoch)

    def _features(self, split: str) -> TensorDataset:
        """Features of ``split`` (eval transform), from ``$ZOO_CACHE/features`` or computed once and cached."""
        model = self.trainer.lightning_module
        ds = self.datasets["train_eval" if split == "train" else split]
        samples = [ds.dataset.samples[i] for i in ds.indices] if isinstance(ds, Subset) else ds.samples
        key = hashlib.sha256(
            f"{model.features_fingerprint()}|{self.eval_transform}|{files_fingerprint(samples)}".encode()
        ).hexdigest()[:20]
        if split in self.features and self.features[split].key == key:
            return self.features[split]
        path = cache_dir("features") / f"{split}-{key}.npz"
        cached = read_cache(path)  # None when absent or damaged (checksum): computed again, never used
        if cached is not None:
            feats, labels = torch.from_numpy(cached["features"]), torch.from_numpy(cached["labels"])
        else:
            start, chunks, labels = time.perf_counter(), [], []
            loader = DataLoader(ds, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)
            with torch.random.fork_rng(devices=[]):  # iterating draws a seed: a run must not depend on the cache
                for x, y in loader:
                    chunks.append(model.extract_features(x.to(model.device)).float().cpu())  # (B, F)
                    labels.append(y)
            feats, labels = torch.cat(chunks), torch.cat(labels)
            write_cache(path, features=feats.numpy(), labels=labels.numpy())
            print(f"zoo: {split} features {tuple(feats.shape)} in {time.perf_counter() - start:.1f}s -> {path}")
        dataset = TensorDataset(feats, labels)
        dataset.key = key
        self.features[split] = dataset
        return dataset

    # ------------------------------------------------------------------------------------------------- loaders
    def _loader(self, ds: Dataset, shuffle: bool = False, sampler=None) -> DataLoader:
        features = isinstance(ds, TensorDataset)
        workers = 0 if features else self.hparams.num_workers  # features are in memory already
        return DataLoader(ds, batch_size=self.hparams.batch_size, shuffle=shuffle and sampler is None,
                          sampler=sampler, num_workers=workers, persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        ds = self._features("train") if self._use_features() else self.datasets["train"]
        sampler = None
        if self.sampling != "none":  # seeded per epoch: Lightning calls the sampler's set_epoch
            targets = ds.tensors[1] if isinstance(ds, TensorDataset) else self._targets(ds)
            sampler = BalancedSampler(targets, self.sampling, seed=self.hparams.seed, num_classes=self.num_classes)
        return self._loader(ds, shuffle=True, sampler=sampler)

    @staticmethod
    def _targets(ds: Dataset) -> list[int]:
        if isinstance(ds, Subset):
            return [ds.dataset.targets[i] for i in ds.indices]
        return list(ds.targets)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._features("val") if self._use_features() else self.datasets["val"])

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"])

    def predict_dataloader(self) -> DataLoader:
        if self.hparams.predict_dir:
            root = Path(self.hparams.predict_dir).expanduser()
            paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
            if not paths:
                raise ImageFolderNotFoundError(f"No images ({', '.join(IMG_EXTENSIONS)}) under {root}.")
        else:
            val = self.datasets["val"]
            samples = [val.dataset.samples[i] for i in val.indices] if isinstance(val, Subset) else val.samples
            paths = [Path(p) for p, _ in samples]
        return self._loader(Files(paths, self.eval_transform))
