"""Text a language model writes, each epoch: appended to ``samples.txt`` in the run dir, also sent to W&B or TensorBoard.

Usage:
    trainer = L.Trainer(callbacks=[TextSamples(length=200)])
    # zoo fit --config configs/lstm_tinyshakespeare.yaml --trainer.callbacks+=TextSamples

The model says how to write by exposing ``generate(prompt, length, temperature, top_k, seed) -> str`` (CharLSTM).
With W&B the samples are a table (epoch, step, prompt, sample) under ``samples/text``; with TensorBoard, text.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import WandbLogger


class TextSamples(L.Callback):
    """Continue each prompt at the end of every ``every_n_epochs``-th training epoch (global rank 0).

    Args:
        prompts: texts to continue; None: the data module's ``prompts`` hyperparameter, else a newline.
        length: characters (tokens) generated per prompt.
        temperature: sampling temperature (0 = greedy).
        top_k: sample among the ``top_k`` most likely tokens only (0 = all).
        seed: fixed, so epochs differ only by what the model learnt.
        every_n_epochs: write every this many epochs (the last epoch is always written).
        filename: file in the trainer's log dir that collects the samples.
    """

    def __init__(self, prompts: list[str] | None = None, length: int = 200, temperature: float = 0.8, top_k: int = 0,
                 seed: int = 0, every_n_epochs: int = 1, filename: str = "samples.txt"):
        self.prompts, self.length, self.temperature, self.top_k = prompts, length, temperature, top_k
        self.seed, self.every_n_epochs, self.filename = seed, every_n_epochs, filename
        self.rows: list[list] = []  # [epoch, step, prompt, sample], all epochs of this process (the W&B table)

    def _prompts(self, trainer: L.Trainer) -> list[str]:
        if self.prompts is not None:
            return list(self.prompts)
        hparams = getattr(trainer.datamodule, "hparams", {}) if trainer.datamodule is not None else {}
        return list(hparams.get("prompts") or ["\n"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if not (last or (epoch + 1) % self.every_n_epochs == 0) or not trainer.is_global_zero:
            return
        rows = [[epoch, trainer.global_step, p,
                 pl_module.generate(p, self.length, self.temperature, self.top_k, seed=self.seed)]
                for p in self._prompts(trainer)]
        self.emit(trainer, rows)

    def emit(self, trainer: L.Trainer, rows: list[list]) -> Path:
        """Append ``rows`` to the samples file and send them to every text-capable logger."""
        path = Path(trainer.log_dir or trainer.default_root_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            for epoch, step, prompt, sample in rows:
                f.write(f"=== epoch {epoch} step {step} prompt {prompt!r}\n{prompt}{sample}\n")
        self.rows += rows
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):  # the whole table so far: W&B shows the latest table per key
                logger.log_text(key="samples/text", columns=["epoch", "step", "prompt", "sample"],
                                data=[list(map(str, r[:2])) + r[2:] for r in self.rows], step=trainer.global_step)
            elif hasattr(getattr(logger, "experiment", None), "add_text"):  # TensorBoard's SummaryWriter
                text = "\n\n".join(f"**{p!r}** {s}" for _, _, p, s in rows)
                logger.experiment.add_text("samples/text", text, global_step=trainer.global_step)
        return path
