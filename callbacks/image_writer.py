"""Write what ``predict`` returns as image files: Lightning's BasePredictionWriter for image-to-image models.

Usage:
    zoo predict --config configs/pix2pix_people_cpu.yaml --ckpt_path last.ckpt \\
        --trainer.callbacks+=ImageWriter --trainer.callbacks.output_dir translated/

The model's ``predict_step`` returns ``{"images": (B, C, H, W) in [0, 1], "names": list[str] | None}``; each image is
saved as ``<output_dir>/<name>.png`` (``<batch>_<index>.png`` when there are no names).
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter
from torchvision.utils import save_image


class ImageWriter(BasePredictionWriter):
    """Save predicted images as PNGs.

    Args:
        output_dir: folder for the files; default ``<trainer log dir>/predictions``.
        limit: images written at most (None: all).
    """

    def __init__(self, output_dir: str | None = None, limit: int | None = None):
        super().__init__(write_interval="batch")
        self.output_dir, self.limit = output_dir, limit
        self.written: list[Path] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        folder = Path(self.output_dir or Path(trainer.log_dir or trainer.default_root_dir) / "predictions")
        folder.mkdir(parents=True, exist_ok=True)
        images, names = prediction["images"], prediction.get("names")
        for i, image in enumerate(images):
            if self.limit is not None and len(self.written) >= self.limit:
                return
            stem = names[i] if names else f"{batch_idx:05d}_{i:03d}"
            if trainer.world_size > 1 and not names:
                stem = f"rank{trainer.global_rank}_{stem}"
            path = folder / f"{stem}.png"
            save_image(image.float().cpu(), path)
            self.written.append(path)

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.written and trainer.is_global_zero:
            print(f"wrote {len(self.written)} images to {self.written[0].parent}", flush=True)
