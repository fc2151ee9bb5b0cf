"""Character-level LSTM (or GRU) language model, trained with truncated backpropagation through time.

Usage:
    model = zoo.get_model("char_lstm", vocab=dm.vocab)    # or: zoo fit --config configs/lstm_tinyshakespeare.yaml
    print(model.generate("ROMEO:", length=200, temperature=0.8, top_k=10, seed=0))

Lightning 2.x dropped built-in TBPTT, so the module does it: the data module serves contiguous streams (row ``b`` of
batch ``i + 1`` continues row ``b`` of batch ``i``), the hidden state is carried from batch to batch and detached
after each step, so gradients flow back ``seq_len`` characters while the state remembers the whole stream. Training,
validation and test each carry their own state, reset at the start of their epoch. Losses are in nats per character;
bits per character and perplexity are logged next to them.

The vocabulary (a string, character ``i`` = id ``i``) is a constructor argument. Left empty, it is taken from the
data module in ``setup`` and written into the hyperparameters, so the checkpoint rebuilds the model without the corpus.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable
from torch import nn
from torchmetrics import MeanMetric

from zoo import register_model
from zoo.optim import OptimizerName, Schedule, SchedulerInterval, configure_optimizers

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # GRU: h; LSTM: (h, c); each (layers, B, hidden)


class _Fp32OnCpusWithoutBf16:
    """CPU autocast (``bf16-mixed``) sends LSTM/GRU to oneDNN in bf16, which has no such kernel on processors without
    native bf16 ("could not create a primitive descriptor for the LSTM forward propagation primitive"); there the
    recurrent layer runs in fp32 and the rest of the model stays in bf16."""

    def forward(self, x: torch.Tensor, state: State | None = None):
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and not _cpu_has_bf16():
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float(), state)
        return super().forward(x, state)


@functools.cache
def _cpu_has_bf16() -> bool:
    """Can oneDNN run an LSTM in bf16 on this CPU? Asked by trying (torch has no public query for it)."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            nn.LSTM(4, 4, batch_first=True)(torch.zeros(1, 2, 4))
        return True
    except RuntimeError:
        return False


class LSTM(_Fp32OnCpusWithoutBf16, nn.LSTM):
    pass


class GRU(_Fp32OnCpusWithoutBf16, nn.GRU):
    pass


def recurrent(cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float) -> nn.RNNBase:
    """A batch-first LSTM or GRU (``nn.LSTM``/``nn.GRU``, fp32 under CPU bf16 autocast where the CPU lacks bf16) with
    ``dropout`` between its layers."""
    cls = {"lstm": LSTM, "gru": GRU}[cell]
    return cls(input_size, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)


def detach_state(state: State | None) -> State | None:
    """The same hidden state cut from the graph: the next step's gradients stop here (truncated BPTT)."""
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator | None = None):
    """Ids (B,) drawn from logits (B, V) at ``temperature`` among the ``top_k`` best (0: all); temperature 0: argmax."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


class CharRNN(nn.Module):
    """Embedding -> dropout -> multi-layer LSTM/GRU -> dropout -> linear decoder (optionally tied to the embedding).
    Ids (B, T) and a state -> logits (B, T, V) and the new state."""

    def __init__(self, vocab_size: int, cell: str, embed_dim: int, hidden_size: int, num_layers: int,
                 dropout: float, tie_weights: bool):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.rnn = recurrent(cell, embed_dim, hidden_size, num_layers, dropout)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            if embed_dim != hidden_size:
                raise ValueError(f"tie_weights needs embed_dim == hidden_size (got {embed_dim} and {hidden_size}).")
            self.decoder.weight = self.embed.weight  # Press & Wolf (2017): one matrix for input and output

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        x = self.drop(self.embed(ids))  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        return self.decoder(self.drop(out)), state  # (B, T, V)


@register_model("char_lstm", description="Character-level LSTM/GRU language model with truncated BPTT (char-rnn)",
                tiny={"vocab": "abcdef", "embed_dim": 8, "hidden_size": 16, "num_layers": 2})
class CharLSTM(L.LightningModule):
    """Character-level recurrent language model (Karpathy's char-rnn) trained with truncated BPTT.

    Args:
        vocab: the characters, id = position; empty: taken from the data module's training split at ``setup``.
        cell: "lstm" or "gru".
        embed_dim: character embedding size.
        hidden_size: recurrent state size per layer.
        num_layers: stacked recurrent layers.
        dropout: on the embeddings, between recurrent layers and before the decoder.
        tie_weights: share the embedding and decoder matrices (needs ``embed_dim == hidden_size``).
        lr: peak learning rate.
        weight_decay: decay of the weight matrices (none on biases and embeddings).
        betas: the Adam-family optimizers' betas.
        optimizer: a ``zoo.optim`` name ("adamw", "adam", "radam", "ranger", "lamb", "sgd", ...).
        scheduler: called with the optimizer, stepped every ``scheduler_interval``. Overrides ``schedule``.
        scheduler_interval: "epoch" or "step", for ``scheduler``.
        schedule: built-in per-step schedule when ``scheduler`` is None: "constant", "linear" or "cosine" decay
            after the warm-up, "flat_cosine" (flat, then cosine over the second half) or "onecycle".
        warmup: fraction of the steps spent ramping the learning rate up from 0.
        lr_end: learning-rate multiplier at the last step.
    """

    def __init__(
        self,
        vocab: str = "",
        cell: Literal["lstm", "gru"] = "lstm",
        embed_dim: int = 128,
        hidden_size: int = 512,
        num_layers: int = 3,
        dropout: float = 0.25,
        tie_weights: bool = False,
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.99),
        optimizer: OptimizerName = "adamw",
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: SchedulerInterval = "epoch",
        schedule: Schedule = "cosine",
        warmup: float = 0.02,
        lr_end: float = 0.1,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["scheduler"])
        self.scheduler_factory = scheduler
        self.net: CharRNN | None = None
        if vocab:
            self._build(vocab)
        self.hidden: dict[str, State | None] = {"train": None, "val": None, "test": None}
        self.nll = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})

    def _build(self, vocab: str) -> None:
        h = self.hparams
        self.hparams.vocab = vocab  # saved into the checkpoint's hyperparameters
        self.stoi = {c: i for i, c in enumerate(vocab)}
        self.net = CharRNN(len(vocab), h.cell, h.embed_dim, h.hidden_size, h.num_layers, h.dropout, h.tie_weights)

    def setup(self, stage: str) -> None:
        data_vocab = getattr(self.trainer.datamodule, "vocab", None)  # setup() is a Trainer hook
        if not self.hparams.vocab and data_vocab:
            self._build(data_vocab)
        elif data_vocab and data_vocab != self.hparams.vocab:
            raise ValueError(f"The model's vocabulary ({len(self.hparams.vocab)} characters) differs from the data's "
                             f"({len(data_vocab)}); the ids would mean different characters. Use the same corpus.")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The carried state (truncated BPTT) and where it was: a run resumed at the very next batch continues from it;
        # one resumed at an epoch's start begins from zeros, as the uninterrupted run does.
        state, at = self.hidden["train"], getattr(self, "_trained_up_to", None)
        if state is not None and at is not None:
            checkpoint["train_state"] = list(state) if isinstance(state, tuple) else [state]
            checkpoint["train_state_at"] = list(at)  # [epoch, batches trained in it]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "train_state" in checkpoint and "train_state_at" in checkpoint:
            state = checkpoint["train_state"]
            self._restored_state = (tuple(state) if len(state) > 1 else state[0], tuple(checkpoint["train_state_at"]))
        vocab = checkpoint["hyper_parameters"]["vocab"]
        if not self.hparams.vocab:  # e.g. `zoo predict --ckpt_path`: no corpus was read, the checkpoint has it
            self._build(vocab)
        elif vocab != self.hparams.vocab:
            raise ValueError("The checkpoint's vocabulary differs from the model's; it was trained on another corpus.")

    def example_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A random training batch: (input ids, next-character ids), each (2, 10)."""
        vocab = len(self.hparams.vocab)
        return torch.randint(0, vocab, (2, 10)), torch.randint(0, vocab, (2, 10))

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Ids (B, T), optional state -> logits (B, T, V) and the state after the last character."""
        if self.net is None:
            raise RuntimeError("CharLSTM has no vocabulary yet: pass vocab=..., train with a text data module, or "
                               "load a checkpoint.")
        return self.net(ids, state)

    def _step(self, batch, stage: str) -> torch.Tensor:
        """Loss (nats/char) of one batch, continuing this stage's state; the state is then detached and kept."""
        x, y = batch  # (B, T) each
        state = self.hidden[stage]
        if state is not None and (state[0] if isinstance(state, tuple) else state).shape[1] != x.shape[0]:
            state = None  # a different number of streams: nothing to continue
        logits, state = self(x, state)
        self.hidden[stage] = detach_state(state)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    def on_train_epoch_start(self) -> None:
        self.hidden["train"] = None  # each epoch starts from zeros

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # A run resumed from a checkpoint taken inside an epoch continues the state saved with it.
        restored = self.__dict__.pop("_restored_state", None)
        if restored is not None and restored[1] == (self.current_epoch, batch_idx):
            state = restored[0]
            self.hidden["train"] = tuple(t.to(self.device) for t in state) if isinstance(state, tuple) else state.to(
                self.device)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        self._trained_up_to = (self.current_epoch, batch_idx + 1)  # where self.hidden["train"] stands
        self.log("train/loss", loss, prog_bar=True, batch_size=batch[1].numel())
        self.log("train/bpc", loss / math.log(2), batch_size=batch[1].numel())
        return loss

    def on_validation_epoch_start(self) -> None:
        self.hidden["val"] = None

    def validation_step(self, batch, batch_idx: int) -> None:
        self.nll["val"].update(self._step(batch, "val"), weight=batch[1].numel())  # token-weighted mean

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_start(self) -> None:
        self.hidden["test"] = None

    def test_step(self, batch, batch_idx: int) -> None:
        self.nll["test"].update(self._step(batch, "test"), weight=batch[1].numel())

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _log_epoch(self, stage: str) -> None:
        loss = self.nll[stage].compute()  # nats per character over the whole split
        self.nll[stage].reset()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}/bpc", loss / math.log(2))
        self.log(f"{stage}/ppl", loss.exp())

    def predict_step(self, batch: dict, batch_idx: int) -> str:
        """A request ``{"prompt", "length", "temperature", "top_k"}`` (see CharTextDataModule) -> prompt + sample."""
        return batch["prompt"] + self.generate(batch["prompt"], batch["length"], batch["temperature"], batch["top_k"])

    @torch.no_grad()
    def generate(self, prompt: str, length: int, temperature: float = 1.0, top_k: int = 0, seed: int | None = None,
                 ) -> str:
        """Sample ``length`` characters following ``prompt`` (temperature 0: greedy). With ``seed`` the sample
        depends on nothing else; without, it draws from torch's global generator."""
        unknown = set(prompt) - set(self.hparams.vocab)
        if not prompt or unknown:
            raise ValueError(f"The prompt must be non-empty and use the model's vocabulary; unknown: {sorted(unknown)}")
        generator = None
        if seed is not None:
            generator = torch.Generator(self.device).manual_seed(seed)
        was_training = self.training
        self.eval()
        ids = torch.tensor([[self.stoi[c] for c in prompt]], device=self.device)  # (1, P)
        logits, state = self(ids)
        out = []
        for _ in range(length):
            nxt = sample_next(logits[:, -1], temperature, top_k, generator)  # (1,)
            out.append(int(nxt))
            logits, state = self(nxt.view(1, 1), state)
        self.train(was_training)
        return "".join(self.hparams.vocab[i] for i in out)

    def parameter_groups(self) -> list[dict]:
        """Matrices with weight decay; biases and the embedding without (tied weights count as the embedding)."""
        no_decay = {id(p) for p in self.net.embed.parameters()} | {id(p) for p in self.parameters() if p.ndim < 2}
        decay = [p for p in self.parameters() if id(p) not in no_decay]
        return [{"params": decay}, {"params": [p for p in self.parameters() if id(p) in no_decay], "weight_decay": 0.0}]

    def configure_optimizers(self):
        return configure_optimizers(self, self.parameter_groups(), self.scheduler_factory,
                                    self.hparams.scheduler_interval)

