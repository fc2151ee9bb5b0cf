"""The ``zoo`` command: every subcommand lives here (Lightning's four run through LightningCLI).

Usage:
    zoo                                              # the subcommands, a line each
    zoo fit --config configs/cifar_cnn.yaml --trainer.max_steps 20
    zoo list [PATTERN] [--json]
    zoo export runs/<run>/checkpoints/last.ckpt --name my_net
    zoo evaluate cifar_resnet_cifar10

Only the subcommand that runs is imported: ``zoo --help`` needs neither Lightning nor torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

LIGHTNING_COMMANDS = {
    "fit": "train a model: zoo fit --config configs/<model>.yaml",
    "validate": "run the validation loop on a checkpoint",
    "test": "run the test loop on a checkpoint: zoo test --config ... --ckpt_path ...",
    "predict": "run predictions with a checkpoint",
}
ZOO_COMMANDS = {
    "list": "registered models and published checkpoints (--json for scripts)",
    "export": "Lightning .ckpt -> safetensors + model card; --format onnx/torchscript/exported-program",
    "evaluate": "re-measure a published checkpoint's card metrics on its dataset",
    "quantize": "int8 copy of a checkpoint (static ONNX for classifiers, dynamic TorchScript for LSTMs)",
    "serve": "HTTP server and a page to try published models: zoo serve [NAME ...] --port 8000",
    "pseudo-label": "a teacher's labels for the unlabelled CIFAR-10 images: zoo pseudo-label NAME --labelled 4000",
}


class UsageError(Exception):
    """A mistake in the command line: one line on stderr, exit 2."""


def overview() -> str:
    lines = ["usage: zoo <command> [options]   (zoo <command> --help for its options)", "", "commands:"]
    for name, text in {**LIGHTNING_COMMANDS, **ZOO_COMMANDS}.items():
        lines.append(f"  {name:<10}{text}")
    lines += ["", "Set ZOO_DEBUG=1 to see full tracebacks. Docs: README.md"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ zoo list
def list_rows(pattern: str) -> list[dict]:
    """One row per registered model and, under it, one per published checkpoint of it."""
    import zoo
    from zoo.hub import published

    cards = published()
    rows = []
    for name in zoo.list_models(pattern):
        entry = zoo.model_entry(name)
        rows.append({"model": name, "class": entry.cls.__name__, "description": entry.description,
                     "checkpoints": [{"name": c["name"], "metrics": c["metrics"]}
                                     for c in cards.values() if c["model"] == name]})
    return rows


def cmd_list(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="zoo list", description=ZOO_COMMANDS["list"])
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter on model names, e.g. 'cifar*'")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = list_rows(args.pattern)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="zoo models (zoo.get_model / zoo fit --model NAME) and checkpoints (zoo.load NAME)")
    table.add_column("model / checkpoint", no_wrap=True)
    table.add_column("description or metrics", overflow="fold")
    for row in rows:
        table.add_row(f"[bold]{row['model']}[/]", row["description"])
        for ckpt in row["checkpoints"]:
            headline = {k: v for k, v in ckpt["metrics"].items() if not k.startswith("test/acc_")}  # not per class
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in headline.items()) or "-"
            table.add_row(f"  {ckpt['name']}", metrics)
    Console().print(table)
    return 0


# ---------------------------------------------------------------------------------------- zoo export / evaluate
FORMATS = {"onnx": ".onnx", "torchscript": ".ts.pt", "exported-program": ".pt2"}


def cmd_export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="zoo export", description=ZOO_COMMANDS["export"])
    parser.add_argument("ckpt", type=Path, help="a Lightning checkpoint (safetensors + card), or a card (published "
                        "name or .json) to re-card with --set, sharing its weights; for the other formats any "
                        "zoo.load source: a published name, a card, a .ckpt")
    parser.add_argument("--format", choices=["safetensors", *FORMATS], default="safetensors",
                        help="safetensors + model card (default), or a file that runs without the zoo: onnx "
                             "(onnxruntime), torchscript, exported-program (torch.export); card inside the file")
    parser.add_argument("--part", help="what to export where a model has several (e.g. vae: decoder, encoder)")
    parser.add_argument("-o", "--output", type=Path, help="output file for --format onnx/torchscript/exported-program "
                        "(default: published/<source>[.<part>].<ext>)")
    parser.add_argument("--name", help="checkpoint name for --format safetensors, e.g. my_cifar_cnn")
    parser.add_argument("--out", type=Path, default=Path("published"), help="output folder (default: ./published)")
    parser.add_argument("--force", action="store_true", help="replace a checkpoint of that name in --out")
    parser.add_argument("--config", type=Path, help="training config (default: config.yaml of the run)")
    parser.add_argument("--no-test", action="store_true", help="skip the test run (card without metrics)")
    parser.add_argument("--licence", help="licence of the training data, for the card")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change a model argument that uses the weights differently, never their shapes (e.g. "
                             "tta=2, or a VAE's refine_steps=50); YAML values, repeatable; the card records it")
    args = parser.parse_args(argv)
    try:
        hparams = dict(_key_value(item) for item in args.set)
    except ValueError as err:
        parser.error(str(err))
    if args.format != "safetensors":
        if hparams:
            parser.error("--set applies to --format safetensors (the card); other formats export the model as saved")
        return export_file(args)
    if not args.name:
        parser.error("--name is required for --format safetensors")
    from zoo.hub import export

    card = export(args.ckpt, args.name, args.out, args.config, test=not args.no_test, licence=args.licence,
                  force=args.force, hparams=hparams)
    print(f"wrote {card} (weights: {card.parent / json.loads(card.read_text())['weights']['file']})")
    print(json.dumps(json.loads(card.read_text())["metrics"], indent=2))
    return 0


def _key_value(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` with a YAML value (``refine_steps=50`` -> ("refine_steps", 50))."""
    import yaml

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set tta=2")
    return key, yaml.safe_load(value)


def export_file(args) -> int:
    """``zoo export SOURCE --format onnx|torchscript|exported-program``: write, then verify in the file's runtime."""
    import zoo
    from zoo.export import export_model, verify_export

    model = zoo.load(str(args.ckpt))
    stem = Path(str(args.ckpt)).stem if Path(str(args.ckpt)).suffix else str(args.ckpt)
    out = args.output or Path("published") / f"{stem}{'.' + args.part if args.part else ''}{FORMATS[args.format]}"
    path = export_model(model, out, format=args.format, part=args.part)
    check = verify_export(path, model)
    print(f"wrote {path} ({check['bytes'] / 1e6:.2f} MB); run in its runtime vs PyTorch: max |diff| "
          f"{check['max_abs_diff']:.2e}" + (f", top-1 agreement {check['top1_agreement']:.2%}"
                                             if check.get("top1_agreement") is not None else ""))
    return 0


def cmd_quantize(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="zoo quantize", description=ZOO_COMMANDS["quantize"])
    parser.add_argument("source", help="a published name, a card or a .ckpt")
    parser.add_argument("-o", "--output", type=Path, help="output file (default: published/<source>.int8.onnx for "
                        "classifiers, .int8.ts.pt for the LSTMs)")
    parser.add_argument("--calibration", type=int, default=512, help="training images that set activation ranges")
    parser.add_argument("--data-dir", help="dataset folder for calibration (default: $ZOO_DATA_DIR, else ./data)")
    args = parser.parse_args(argv)
    import tempfile

    import zoo
    from zoo.export import export_model, graph_spec, quantize_dynamic_int8, quantize_static_int8, verify_export

    model = zoo.load(args.source)
    stem = Path(args.source).stem if Path(args.source).suffix else args.source
    if graph_spec(model).part == "classifier":  # static int8 ONNX calibrated on training images
        from zoo.hub import _data_from_config

        out = args.output or Path("published") / f"{stem}.int8.onnx"
        dm = _data_from_config(model.zoo_card["data"], **({"data_dir": args.data_dir} if args.data_dir else {}))
        if hasattr(model, "data_config") and hasattr(dm, "data_config"):
            dm.data_config = lambda: dict(model.data_config)
        dm.setup("fit")
        batches, seen = [], 0
        for batch in dm.train_dataloader():
            x = dm.on_after_batch_transfer(tuple(batch[:2]), 0)[0]
            batches.append(x[: args.calibration - seen])
            seen += len(batches[-1])
            if seen >= args.calibration:
                break
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_model(model, Path(tmp) / "fp32.onnx", format="onnx")
            path = quantize_static_int8(fp32, out, batches)
    else:  # LSTMs and linear layers: dynamic int8, TorchScript
        out = args.output or Path("published") / f"{stem}.int8.ts.pt"
        path = export_model(quantize_dynamic_int8(model), out, format="torchscript")
    check = verify_export(path, model)
    print(f"wrote {path} ({check['bytes'] / 1e6:.2f} MB); int8 vs fp32 PyTorch on random inputs: max |diff| "
          f"{check['max_abs_diff']:.2e}" + (f", top-1 agreement {check['top1_agreement']:.2%}"
                                             if check.get("top1_agreement") is not None else ""))
    return 0


def cmd_pseudo_label(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="zoo pseudo-label", description=ZOO_COMMANDS["pseudo-label"] + ". The "
                                     "student then trains with --data.init_args.pseudo_labels FILE (same data settings).")
    parser.add_argument("teacher", help="a published classifier name, a card or a .ckpt")
    parser.add_argument("--labelled", type=int, required=True, help="labelled training images; the rest are labelled "
                        "by the teacher")
    parser.add_argument("--seed", type=int, default=0, help="the DataModule's seed (split and labelled subset)")
    parser.add_argument("--val-size", type=int, default=5000, help="the DataModule's val_size")
    parser.add_argument("--imbalance-ratio", type=float, default=1.0, help="the DataModule's imbalance_ratio")
    parser.add_argument("--data-dir", help="dataset folder (default: $ZOO_DATA_DIR, else ./data)")
    parser.add_argument("--out", type=Path, required=True, help="the safetensors file to write")
    args = parser.parse_args(argv)
    if args.labelled <= 0:
        raise UsageError("--labelled must be > 0: with every image labelled there is nothing to pseudo-label.")
    import zoo
    from zoo.datamodules.cifar import CIFAR10DataModule
    from zoo.datamodules.pseudo_labels import write_pseudo_labels

    teacher = zoo.load(args.teacher)
    dm = CIFAR10DataModule(data_dir=args.data_dir, labelled=args.labelled, seed=args.seed, val_size=args.val_size,
                           imbalance_ratio=args.imbalance_ratio, batch_size=500)
    tensors = write_pseudo_labels(teacher, dm.unlabelled_dataloader(), args.out)
    confidence = tensors["probs"].max(1).values
    print(f"wrote {args.out}: {len(confidence)} images labelled by {args.teacher}; "
          f"{(confidence >= 0.9).float().mean():.1%} at p >= 0.9")
    return 0


def cmd_serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="zoo serve", description=ZOO_COMMANDS["serve"])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="published checkpoints or zoo.load sources (default: every published checkpoint)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, help="classifier requests answered by one forward pass (1: none)")
    parser.add_argument("--max-wait-ms", type=float, help="how long a batch waits for more requests")
    parser.add_argument("--max-queue", type=int, help="requests waiting at most (then 503)")
    parser.add_argument("--timeout-s", type=float, help="a request's time limit (then 503)")
    args = parser.parse_args(argv)
    from zoo.serve import serve

    batching = {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "max_queue": args.max_queue,
                "timeout_s": args.timeout_s}
    serve(args.names or None, host=args.host, port=args.port, **{k: v for k, v in batching.items() if v is not None})
    return 0


def evaluate_ensemble(sources: list[str], accelerator: str, data_dir: str | None) -> int:
    """``zoo evaluate a+b``: each member and their ensemble on the first member's test set."""
    import zoo
    from zoo.hub import _data_from_config, run_test

    ensemble = zoo.ensemble(sources)
    overrides = {"data_dir": data_dir} if data_dir else {}
    rows = {}
    for name, model in [*zip(sources, ensemble.members), (ensemble.zoo_card["name"], ensemble)]:
        rows[name] = run_test(model, _data_from_config(ensemble.zoo_card["data"], **overrides), accelerator)
    width = max(len(n) for n in rows) + 2
    print(f"{'model':<{width}}{'test/acc':>10}{'test/loss':>11}")
    for name, metrics in rows.items():
        print(f"{name:<{width}}{metrics['test/acc']:>10.4f}{metrics['test/loss']:>11.4f}")
    return 0


def cmd_evaluate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="zoo evaluate", description=ZOO_COMMANDS["evaluate"])
    parser.add_argument("source", help="a published name, a card (.json), a folder or a URL; a+b evaluates the "
                        "ensemble of classifiers a and b next to each of them")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--data-dir", help="dataset folder (default: $ZOO_DATA_DIR, else ./data)")
    parser.add_argument("--tolerance", type=float, default=0.001,
                        help="exit 1 if any metric differs by more (relative for values above 1)")
    parser.add_argument("--add-missing", action="store_true", help="write the metrics the published card lacks "
                        "(measured now from its weights, e.g. macro-F1 and per-class accuracy) into the card")
    args = parser.parse_args(argv)
    if "+" in args.source:
        return evaluate_ensemble(args.source.split("+"), args.accelerator, args.data_dir)
    from zoo.hub import evaluate

    rows = evaluate(args.source, args.accelerator, args.data_dir, add_missing=args.add_missing)
    width = max([20] + [len(k) + 2 for k, _, _ in rows])
    print(f"{'metric':<{width}}{'card':>12}{'measured':>12}{'diff':>10}")
    worst = 0.0
    for k, card_v, got in rows:
        # Relative to the card's value above 1 (a VAE's ~99 nats with a sampled latent varies in the 5th digit).
        err = abs(card_v - got) / max(1.0, abs(card_v))
        worst = max(worst, err) if not math.isnan(got) else math.inf  # nan: metric not measured
        print(f"{k:<{width}}{card_v:>12.4f}{got:>12.4f}{got - card_v:>+10.4f}")
    return 0 if worst <= args.tolerance else 1


# --------------------------------------------------------------------------------------- fit/validate/test/predict
def registered_model_args(argv: list[str]) -> list[str]:
    """``--model cifar_cnn`` (a name from ``zoo list``) -> ``--model zoo.cifar_cnn.CifarCNN`` plus the variant's fixed
    arguments; class names and paths pass through; anything else is a usage error listing the valid names."""
    out = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--model" and i + 1 < len(argv):
            at, value = i + 1, argv[i + 1]
        elif arg.startswith("--model="):
            at, value = i, arg.split("=", 1)[1]
        else:
            continue
        if "." in value or value.endswith((".yaml", ".yml", ".json")) or "{" in value:
            continue  # a class path, a config file or inline YAML: LightningCLI's business
        import zoo

        classes = {zoo.model_entry(n).cls.__name__ for n in zoo.list_models()}
        if value in classes:
            continue
        if value not in zoo.list_models():
            raise UsageError(f"unknown model {value!r}; use a name from `zoo list` ({', '.join(zoo.list_models())}) "
                             f"or a class name ({', '.join(sorted(classes))}).")
        entry = zoo.model_entry(value)
        fixed = [f"--model.{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in entry.fixed.items()]
        replacement = f"{entry.cls.__module__}.{entry.cls.__qualname__}"
        out[at] = replacement if at != i else f"--model={replacement}"
        out[at + 1:at + 1] = fixed
        return out
    return out


def check_config_files(argv: list[str]) -> None:
    """Every ``--config FILE`` exists and is valid YAML; the error names the file (jsonargparse would not)."""
    import yaml

    for i, arg in enumerate(argv):
        path = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else arg.split("=", 1)[1] if arg.startswith(
            "--config=") else None
        if path is None:
            continue
        if not Path(path).is_file():
            raise UsageError(f"--config {path}: no such file (the zoo's configs are in configs/, see README).")
        try:
            yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise UsageError(f"--config {path}: not valid YAML: {' '.join(str(err).split())}") from err


def cmd_lightning(argv: list[str]) -> int:
    from zoo.callbacks.wandb_tools import finish
    from zoo.lightning_cli import ZooCLI

    check_config_files(argv)
    for i, arg in enumerate(argv):  # LightningCLI reads the checkpoint while parsing: check it first, in one line
        ckpt = argv[i + 1] if arg == "--ckpt_path" and i + 1 < len(argv) else arg.split("=", 1)[1] if arg.startswith(
            "--ckpt_path=") else None
        if ckpt and ckpt not in ("last", "best", "hpc", "null"):
            from zoo.lightning_cli import resumed_step

            resumed_step(ckpt)
    args = registered_model_args(argv)
    from_command_line = argv == sys.argv[1:]
    if from_command_line:
        sys.argv[1:] = args  # LightningCLI reads sys.argv itself (and warns when given both)
    try:
        ZooCLI(args=None if from_command_line else args)
    except SystemExit as err:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        finish(exit_code=0 if not err.code else 1)
        if isinstance(err, SIGTERMException):  # Lightning stopped after the current step; last.ckpt holds it
            print("zoo: stopped by SIGTERM; resume with --ckpt_path <run>/checkpoints/last.ckpt", file=sys.stderr)
            return 143
        if isinstance(err.__context__, KeyboardInterrupt):  # Lightning's Ctrl-C handling exits 1
            print("zoo: interrupted; once training had started, <run>/checkpoints/last.ckpt holds its last step "
                  "(resume with --ckpt_path)", file=sys.stderr)
            return 130
        raise
    except BaseException:
        finish(exit_code=1)
        raise
    finish()  # close the W&B run (if any) now, not at interpreter exit
    return 0


COMMANDS = {"list": cmd_list, "export": cmd_export, "evaluate": cmd_evaluate, "quantize": cmd_quantize,
            "serve": cmd_serve, "pseudo-label": cmd_pseudo_label}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(overview())
        return 0 if args else 2
    command = args[0]
    if command not in COMMANDS and command not in LIGHTNING_COMMANDS and not command.startswith("-"):
        print(f"zoo: error: unknown command {command!r}.\n\n{overview()}", file=sys.stderr)
        return 2
    run = COMMANDS.get(command, cmd_lightning)
    try:
        return run(args[1:] if command in COMMANDS else args)
    except KeyboardInterrupt:
        print("zoo: interrupted.", file=sys.stderr)
        return 130
    except UsageError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from zoo.errors import user_error

        message = user_error(err)
        if message is None or os.environ.get("ZOO_DEBUG"):
            raise
        print(f"zoo: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
