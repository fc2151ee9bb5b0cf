"""W&B tracking without a network: offline runs read back with wandb's own records, resume into the same run,
media from the sample callbacks, the logger presets. wandb never sees an API key, ~/.netrc or the home folder."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from conftest import make_raw

from zoo.callbacks import TextSamples
from zoo.callbacks.wandb_tools import choose_mode, run_id_from_checkpoint
from zoo.datamodules.text import CharTextDataModule
from zoo.cli import main
from conftest import benchmark_script
from zoo.lstm import CharLSTM

ROOT = Path(__file__).resolve().parents[1]
read_run = benchmark_script("wandb_offline_readback").read_run  # the script the README's must-show uses

LOGGER_PRESETS = sorted((ROOT / "configs" / "logger").glob("*.yaml"))


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    """wandb offline and quiet, every file it writes under tmp_path; its service is stopped afterwards."""
    home = tmp_path / "wandb_home"
    for var, sub in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                     ("WANDB_CONFIG_DIR", "config"), ("WANDB_ARTIFACT_DIR", "artifacts")):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("NETRC", str(home / "netrc"))  # a file that does not exist: no credentials
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    yield
    import wandb

    wandb.finish()
    wandb.teardown()  # no wandb-core process outlives the test


def offline_runs(root: Path) -> list[Path]:
    """The offline run folders under ``root``, oldest first, once wandb's service has written them out."""
    import wandb

    wandb.finish()
    wandb.teardown()  # wandb.finish() can return before wandb-core has flushed run-*.wandb (seen on a busy CPU)
    return sorted(root.glob("wandb/offline-run-*"), key=lambda p: p.name)


def tiny_cifar_fit(data_dir: Path, root: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(ROOT / "configs" / "cifar_cnn.yaml"), "--config",
            str(ROOT / "configs" / "logger" / "wandb.yaml"), "--data.data_dir", str(data_dir),
            "--data.val_size", "10", "--data.batch_size", "16", "--trainer.default_root_dir", str(root),
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1", *extra]


# ---------------------------------------------------------------------------------------------- offline first
def test_offline_by_itself_without_key_or_route(monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    assert choose_mode() == "offline"  # no WANDB_API_KEY, no netrc entry
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:1")  # a key, but nothing listens there
    assert choose_mode(timeout=1.0) == "offline"
    assert os.environ["WANDB_MODE"] == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's choice wins
    assert choose_mode() == "disabled"


@pytest.mark.parametrize("preset", LOGGER_PRESETS, ids=lambda p: p.name)
def test_logger_presets_stack_and_take_cli_settings(preset, capsys):
    extra = ["--trainer.logger.tags", "[a, b]", "--trainer.logger.group", "g"] if preset.stem == "wandb" else []
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs" / "vae_mnist.yaml"), "--config", str(preset),
              "--trainer.logger.init_args.save_dir", "somewhere", *extra, "--print_config"])
    out = capsys.readouterr().out
    assert "save_dir: somewhere" in out and "ImageGrid" in out  # the model config's callbacks survive
    if extra:
        assert "group: g" in out and "- a" in out and "resume: allow" in out


# ------------------------------------------------------------------------------------------------ what is logged
def test_offline_run_holds_config_history_images_and_model(tmp_path):
    data = make_raw(tmp_path / "data", "MNIST", gz=False, n_train=40, n_test=8)
    main(["fit", "--config", str(ROOT / "configs" / "vae_mnist.yaml"), "--config",
          str(ROOT / "configs" / "logger" / "wandb.yaml"), "--data.data_dir", str(data), "--data.val_size", "8",
          "--data.batch_size", "16", "--model.latent_dim", "4", "--model.widths", "[8, 16]", "--model.hidden", "32",
          "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir",
          str(tmp_path / "run"), "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
          "--trainer.logger.name", "tiny-vae", "--trainer.logger.tags", "[test]", "--trainer.logger.group", "vae"])
    [folder] = offline_runs(tmp_path / "run")
    run = read_run(folder)
    assert run.project == "zoo" and run.tags == ["test"] and run.group == "vae"
    # The full resolved CLI config and the model's hyperparameters.
    assert run.config["trainer"]["max_epochs"] == 1 and run.config["model"]["class_path"] == "zoo.vae.VAE"
    assert run.config["data"]["init_args"]["batch_size"] == 16 and run.config["latent_dim"] == 4
    # Metrics against the global step, the learning rate, the image grids.
    steps = [row["trainer/global_step"] for row in run.history]
    assert steps == sorted(steps) and max(steps) >= 2
    keys = set().union(*run.history)
    assert {"train/loss", "val/nelbo"} <= keys or {"train/nelbo", "val/nelbo"} <= keys, keys
    assert any(k.startswith("lr-") for k in keys), keys
    [samples] = [row["images/samples"] for row in run.history if "images/samples" in row]
    assert samples["_type"] == "images/separated" and samples["captions"] == ["epoch 0"]
    png = folder / "files" / samples["filenames"][0]  # the media file the history row points to
    assert png in run.media and png.suffix == ".png" and png.stat().st_size > 100
    assert any("images/reconstructions" in row for row in run.history)
    # The final checkpoint with its model card, as a model artifact that `wandb sync` will upload.
    [artifact] = run.artifacts
    assert artifact["type"] == "model" and artifact["name"] == f"model-{run.run_id}"
    assert {"last.ckpt", f"model-{run.run_id}.json", f"model-{run.run_id}.safetensors"} == set(artifact["files"])
    # Checkpoints and config.yaml sit in the run's own folder, so `zoo export` finds the config by itself.
    run_folder = tmp_path / "run" / "zoo" / run.run_id
    assert (run_folder / "config.yaml").is_file() and (run_folder / "checkpoints" / "last.ckpt").is_file()


def test_resumed_fit_continues_the_same_run(cifar_pickles, tmp_path):
    main(tiny_cifar_fit(cifar_pickles, tmp_path / "run", "--trainer.max_epochs", "1"))
    [ckpt] = (tmp_path / "run" / "zoo").glob("*/checkpoints/last.ckpt")
    run_id = run_id_from_checkpoint(ckpt)
    assert run_id == ckpt.parent.parent.name
    main(tiny_cifar_fit(cifar_pickles, tmp_path / "run", "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt)))
    first, second = (read_run(f) for f in offline_runs(tmp_path / "run"))
    assert first.run_id == second.run_id == run_id
    last_step = max(row["trainer/global_step"] for row in first.history)
    assert min(row["trainer/global_step"] for row in second.history) > last_step  # steps go on, not restart
    assert second.config["ckpt_path"] == str(ckpt)
    assert run_id_from_checkpoint(ckpt) == run_id  # the resumed fit wrote the same id into last.ckpt


# ------------------------------------------------------------------------------------------------- any logger
def test_text_samples_reach_wandb_and_a_file_with_any_logger(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("To be, or not to be: that is the question.\n" * 40, encoding="utf-8")
    dm = CharTextDataModule(str(text), batch_size=2, seq_len=16, prompts=["To be"])
    model = CharLSTM(embed_dim=8, hidden_size=16, num_layers=1, dropout=0.0)
    loggers = [WandbLogger(save_dir=str(tmp_path / "w"), project="zoo"), CSVLogger(tmp_path / "csv")]
    for logger in (loggers, loggers[1]):
        samples = TextSamples(length=12)
        trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=logger,
                            callbacks=[samples], enable_progress_bar=False, enable_model_summary=False,
                            enable_checkpointing=False, accelerator="cpu")
        trainer.fit(model, datamodule=dm)
        written = (Path(trainer.log_dir) / "samples.txt").read_text(encoding="utf-8")
        assert "prompt 'To be'" in written and len(samples.rows[0][3]) == 12
    [folder] = offline_runs(tmp_path / "w")
    run = read_run(folder)
    assert any("samples/text" in row for row in run.history)
    [table] = [p for p in run.media if p.name.endswith(".table.json")]
    assert "To be" in table.read_text()
