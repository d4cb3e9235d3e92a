"""The ``lensclf`` command line: argument parsing, exit codes and one-line errors.

Run ``lensclf --help`` or ``lensclf COMMAND --help``. Each command calls one
function of :mod:`lensclf.workflows` (:func:`~lensclf.workflows.run_demo`,
``run_train``, ``run_evaluate``, ``run_predict``, ``run_simulate``, also
importable from ``lensclf`` and from here), so everything a command does is
one import away in Python; this module only builds the parser (shared
options come from parent parsers), calls the workflow and turns errors into
one-line messages.

Exit codes: 0 success, 1 a data, model or file problem (one line on stderr;
``--debug`` shows the traceback), 2 bad usage, 130 / 143 ``train`` interrupted
by SIGINT / SIGTERM (the best model so far is saved; ``--resume`` continues).
"""

import argparse
import math
import signal
import sys

from ._classdirs import check_id_pattern
from ._classifier import LensClassifier
from ._errors import LensDataError
from ._version import __version__
from .simulate import DIFFICULTIES
from .workflows import (
    CHECKPOINT_DIR_NAME,
    DEMO_DIFFICULTY,
    DEMO_EPOCHS,
    DEMO_FAST_EPOCHS,
    DEMO_FAST_SIZES,
    DEMO_SIZES,
    MODEL_FILE_NAME,
    PREDICT_CHUNK_SIZE,
    TrainingInterrupted,
    run_demo,
    run_evaluate,
    run_pack,
    run_predict,
    run_simulate,
    run_train,
)

__all__ = [
    "DEMO_DIFFICULTY",
    "DEMO_EPOCHS",
    "DEMO_FAST_EPOCHS",
    "DEMO_FAST_SIZES",
    "DEMO_SIZES",
    "CHECKPOINT_DIR_NAME",
    "MODEL_FILE_NAME",
    "PREDICT_CHUNK_SIZE",
    "TrainingInterrupted",
    "build_parser",
    "main",
    "run_demo",
    "run_evaluate",
    "run_pack",
    "run_predict",
    "run_simulate",
    "run_train",
]

_DEFAULTS = LensClassifier().get_params()


# --------------------------------------------------------------------------- argument parsing


def _integer(accept, what):
    """An argparse type: an integer for which ``accept(value)`` holds, else "expected {what}"."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _integer(lambda v: v >= 1, "a positive integer")
_count = _integer(lambda v: v >= 0, "a non-negative integer")
_jobs = _integer(lambda v: v != 0, "a non-zero integer (-1 = all cores)")


def _number(low, high, low_open, high_open, what):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_fraction = _number(0.0, 1.0, True, True, "a number strictly between 0 and 1")
_probability = _number(0.0, 1.0, False, False, "a number between 0 and 1")
_positive_float = _number(0.0, math.inf, True, True, "a positive number")
_non_negative_float = _number(0.0, math.inf, False, True, "a non-negative number")


def _valid_size(text):
    if text.lower() == "none":
        return None
    return _fraction(text)


def _ema_epochs(text):
    """``--ema-epochs``: ``none`` (no weight averaging) or a positive number of epochs."""
    return None if text.lower() == "none" else _positive_float(text)


def _weights(text):
    """``--weights``: ``none`` means random initial weights (``weights=None``)."""
    return None if text.lower() == "none" else text


_input_side = _integer(lambda v: v >= 16, "'auto', 'none' or an integer of at least 16")


def _input_size(text):
    """``--input-size``: ``auto``, ``none`` (the native size) or a side length in pixels."""
    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    return _input_side(text)


def _balance(text):
    return None if text.lower() == "none" else text


def _classes(text):
    """``--classes NAME=LABEL[,NAME=LABEL...]``: class folder names and their labels, a lens and a non-lens class."""
    classes = {}
    for part in text.split(","):
        name, equals, label = (piece.strip() for piece in part.partition("="))
        if not equals or not name or label not in ("0", "1"):
            raise argparse.ArgumentTypeError(
                f"expected NAME=LABEL[,NAME=LABEL...] with label 1 (lens) or 0 (non-lens), e.g. SL=1,field=0; "
                f"got {part.strip()!r} in {text!r}")
        if name in classes:
            raise argparse.ArgumentTypeError(f"class folder {name!r} is given twice in {text!r}")
        classes[name] = int(label)
    if set(classes.values()) != {0, 1}:
        raise argparse.ArgumentTypeError(
            f"expected a lens class (label 1) and a non-lens class (label 0), e.g. SL=1,field=0; got {text!r}")
    return classes


def _bands(text):
    """``--bands NAME[,NAME...]``: band folder names, in band order."""
    bands = [name.strip() for name in text.split(",")]
    if not all(bands) or any("/" in name or "\\" in name for name in bands):
        raise argparse.ArgumentTypeError(f"expected band folder names separated by commas, e.g. Band3,Band1,Band2; "
                                         f"got {text!r}")
    twice = sorted({name for name in bands if bands.count(name) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"band folder {twice[0]!r} is given twice in {text!r}")
    return bands


def _id_pattern(text):
    """``--id-pattern REGEX``: it must compile and have a group capturing the object ID."""
    try:
        check_id_pattern(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_debug(parser, suppress_default):
    """``--debug``; a command's copy (``suppress_default``) leaves ``lensclf --debug COMMAND``'s value alone."""
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS if suppress_default else False,
        help="show the full traceback of errors",
    )


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (and exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except empty ones (None, False) and those the help text already gives."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _add_errors(parser):
    """The ``--errors`` option of the commands that read data files."""
    parser.add_argument("--errors", choices=["raise", "skip"], default="raise",
                        help="stop on a bad data file, or list it on stderr and leave it out")


def _add_layout(parser):
    """The class-folder and band-folder options of the commands that read data folders."""
    group = parser.add_argument_group("class folders and band folders")
    group.add_argument("--classes", type=_classes, default=None, metavar="NAME=LABEL,...",
                       help="class folders and their labels, 1 lens and 0 non-lens, e.g. SL=1,field=0 (default: "
                            "lens/ or lenses/ 1, nolens/ nonlens/ nonlenses/ ... 0)")
    group.add_argument("--bands", type=_bands, default=None, metavar="NAME,...",
                       help="band folders in the order of the cutouts' bands, e.g. Band3,Band1,Band2 (default: all, "
                            "in natural name order)")
    group.add_argument("--id-pattern", type=_id_pattern, default=None, metavar="REGEX",
                       help="regular expression whose first group is the object ID in a band file's name "
                            "(default: its last number)")


def _layout_kwargs(args):
    return {"classes": args.classes, "bands": args.bands, "id_pattern": args.id_pattern}


def build_parser():
    """The ``lensclf`` argument parser (one subcommand per task)."""
    parser = _ArgumentParser(
        prog="lensclf",
        description="Find strong gravitational lenses in astronomical cutouts with a ResNet classifier.",
        epilog="Run 'lensclf COMMAND --help' for the options of a command. Start with 'lensclf demo'.",
    )
    parser.add_argument("--version", action="version", version=f"lensclf {__version__}")
    _add_debug(parser, suppress_default=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    formatter = _HelpFormatter

    # Parent parsers (parents=[...]) for the options several commands share.
    common = argparse.ArgumentParser(add_help=False)  # every command
    _add_debug(common, True)
    scoring = argparse.ArgumentParser(add_help=False)  # evaluate and predict: a saved model and how it scores
    scoring.add_argument("model", metavar="MODEL", help="model file saved by 'lensclf train'")
    scoring_options = scoring.add_argument_group("scoring options")
    scoring_options.add_argument("--tta", action="store_true", help="average over the 8 flips and rotations")
    scoring_options.add_argument("--prior", type=_fraction, default=None, metavar="P",
                                 help="lens fraction the probabilities should refer to (default: the model's)")
    scoring_options.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', ...")
    scoring_options.add_argument("--fit-size", choices=["error", "crop", "resize"], default="error",
                                 help="cutouts of another size than the model's: refuse them, take their centre, "
                                      "or resample them (recorded in the output)")

    demo = commands.add_parser(
        "demo", formatter_class=formatter, parents=[common],
        help="simulate a small data set, train, evaluate and write a report",
        description=f"Simulate a small DeepLense-layout data set ({DEMO_DIFFICULTY} difficulty; train "
        f"{DEMO_SIZES['n_train_lenses']:,}/{DEMO_SIZES['n_train_nonlenses']:,}, test "
        f"{DEMO_SIZES['n_test_lenses']:,}/{DEMO_SIZES['n_test_nonlenses']:,} lenses/non-lenses), train a "
        f"LensClassifier for {DEMO_EPOCHS} epochs, evaluate it on the test split and write OUT/data, "
        "OUT/model.safetensors and OUT/report. A few minutes on a laptop CPU.",
    )
    demo.add_argument("--out", default="lensclf-demo", metavar="DIR", help="output folder")
    demo.add_argument("--fast", action="store_true", help="tiny sizes and 1 epoch (a smoke test; the AUC means little)")
    demo.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    demo.add_argument("--quiet", action="store_true", help="print only errors")

    train = commands.add_parser(
        "train", formatter_class=formatter, parents=[common],
        help="train a classifier on a DeepLense-layout folder",
        description="Train a LensClassifier on DATA_DIR/train_lenses and DATA_DIR/train_nonlenses; save "
        "RUN_DIR/model.safetensors (the kept weights), history.csv, history.json and history.png.",
    )
    train.add_argument("data_dir", metavar="DATA_DIR",
                       help="folder with train_lenses/ and train_nonlenses/, or class folders (lens/, nolens/, "
                            "with or without band sub-folders Band1/ Band2/ ...): .npy or FITS files")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="output folder (missing or empty)")
    train.add_argument("--epochs", type=_positive_int, default=_DEFAULTS["max_epochs"], help="training epochs")
    train.add_argument("--lr", type=_positive_float, default=_DEFAULTS["lr"], help="learning rate")
    train.add_argument("--batch-size", type=_positive_int, default=_DEFAULTS["batch_size"], help="training batch size")
    train.add_argument("--weight-decay", type=_non_negative_float, default=_DEFAULTS["weight_decay"],
                       help="L2 penalty")
    train.add_argument("--arch", choices=["resnet18", "resnet34", "resnet50"], default=_DEFAULTS["arch"],
                       help="torchvision architecture")
    train.add_argument("--weights", default=_DEFAULTS["weights"], type=_weights,
                       metavar="{auto,lens,none,imagenet,PATH}",
                       help="initial weights: 'auto' (the shipped lens-pretrained ResNet18 where the architecture "
                            "has it, else random), 'lens', 'none' (random), 'imagenet' or a state-dict file")
    train.add_argument("--balance", type=_balance, choices=["sampler", "pos_weight", None],
                       default=_DEFAULTS["balance"], metavar="{sampler,pos_weight,none}",
                       help="class-imbalance correction")
    train.add_argument("--input-size", type=_input_size, default=_DEFAULTS["input_size"], metavar="{auto,none,N}",
                       help="resize images to N x N pixels inside the network; 'auto' (default): cutouts larger "
                            "than 64 px to 64, smaller ones kept; 'none': the native size")
    train.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    train.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one each run)")
    train.add_argument("--valid-size", type=_valid_size, default=_DEFAULTS["valid_size"], metavar="FRACTION",
                       help="held-out fraction scored each epoch (history, learning-rate cuts, --keep best); "
                            "'none' keeps the last")
    train.add_argument("--early-stopping", type=_positive_int, default=None, metavar="EPOCHS",
                       help="stop after this many epochs without a better validation AUC")
    train.add_argument("--ema-epochs", type=_ema_epochs, default=_DEFAULTS["ema_epochs"], metavar="{none,EPOCHS}",
                       help="validate and keep a moving average of the weights over about this many epochs; "
                            "'none': the trained weights")
    train.add_argument("--keep", choices=["best", "last"], default=_DEFAULTS["keep"],
                       help="return the epoch with the best validation AUC, or the last one")
    train.add_argument("--no-augment", action="store_true", help="no random flips, rotations and jitter")
    _add_errors(train)
    _add_layout(train)
    train.add_argument("--cache", action="store_true",
                       help="cache the loaded split in $LENSCLF_CACHE_DIR or ~/.cache/lensclf")
    train.add_argument("--overwrite", action="store_true", help="write into a non-empty RUN_DIR")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in RUN_DIR from its last epoch, with its parameters")
    train.add_argument("--quiet", action="store_true", help="no progress bars or epoch table")

    evaluate = commands.add_parser(
        "evaluate", formatter_class=formatter, parents=[common, scoring],
        help="score a split of a DeepLense-layout folder and write a report",
        description="Score DATA_DIR's test (or train) split with MODEL and write metrics.json, scores.csv "
        "and plots (ROC, precision-recall, confusion matrix, score histogram, worst mistakes, history) "
        "into REPORT_DIR.",
    )
    evaluate.add_argument("data_dir", metavar="DATA_DIR",
                          help="DeepLense-layout folder, or class folders (lens/, nolens/, with or without band "
                               "sub-folders)")
    evaluate.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder (missing or empty)")
    evaluate.add_argument("--split", choices=["test", "train"], default="test", help="split to score")
    evaluate.add_argument("--threshold", type=_probability, default=None, metavar="T",
                          help="decision threshold (default: the model's)")
    _add_errors(evaluate)
    _add_layout(evaluate)
    evaluate.add_argument("--overwrite", action="store_true", help="replace a report in REPORT_DIR")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    predict = commands.add_parser(
        "predict", formatter_class=formatter, parents=[common, scoring],
        help="score cutouts and write a CSV or Parquet table of lens probabilities",
        description="Score cutouts with MODEL. INPUT: .npy or FITS files holding one cutout (bands, height, "
        "width), stacked .npy arrays (n, bands, height, width) (memory-mapped and scored in chunks), zarr "
        "stores written by 'lensclf pack' (read chunk by chunk), folders of cutout files (not recursive, "
        "natural name order), class folders, or folders of band folders (Band1/ Band2/ ...: one row per object, "
        "its band files matched by ID); or, instead of INPUTs, --catalog CSV naming a file (and a row) per object. "
        "Writes rows source,index,id,score (index: the row in a stack or store, empty for single files; id: "
        "the row's ID in a store), after the catalogue's own columns.",
    )
    predict.add_argument("inputs", metavar="INPUT", nargs="*", help="cutout file, folder or zarr store")
    predict.add_argument("--catalog", metavar="CSV", default=None,
                         help="catalogue with a 'path' column (and optionally 'row'); other columns are copied")
    predict.add_argument("--out", required=True, metavar="TABLE",
                         help="output file: .csv, or .parquet (needs pyarrow)")
    predict.add_argument("--scheduler", default=None, metavar="ADDRESS",
                         help="score one zarr store on a dask cluster: a scheduler address, or local:N for N local "
                              "worker processes; --out may be a .zarr scores store; a rerun resumes")
    predict.add_argument("--block-rows", type=_positive_int, default=None, metavar="N",
                         help="rows per cluster task (default about 4096, whole chunks)")
    predict.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                         help="inference batch size (default: the model's)")
    _add_errors(predict)
    _add_layout(predict)
    predict.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    predict.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    pack = commands.add_parser(
        "pack", formatter_class=formatter, parents=[common],
        help="pack cutout files into one chunked zarr store",
        description="Write cutouts into one zarr store OUT (images (N, bands, H, W) in chunks sized for "
        "scoring, compressed, with each row's source file, ID and label). INPUT: .npy or FITS files, "
        "folders of them (label unknown), a DeepLense-layout folder (its --split, labelled), class folders "
        "(lens/, nolens/, with or without band folders; labelled) or folders of band folders (Band1/ Band2/ ...; "
        "label unknown). An interrupted run is resumed by running "
        "the same command again; a store is marked complete only when every row is written. Needs zarr: "
        "pip install 'lensclf[zarr]'.",
    )
    pack.add_argument("inputs", metavar="INPUT", nargs="+", help="cutout file, folder or labelled layout")
    pack.add_argument("--out", required=True, metavar="STORE", help="the zarr store folder (e.g. cutouts.zarr)")
    pack.add_argument("--split", choices=["train", "test"], default="train",
                      help="split packed from DeepLense-layout inputs")
    pack.add_argument("--chunk-rows", type=_positive_int, default=None, metavar="N",
                      help="cutouts per chunk (default: about 8 MiB of pixels)")
    pack.add_argument("--append", action="store_true", help="add INPUTs to a complete store (same cutout shape)")
    _add_errors(pack)
    _add_layout(pack)
    pack.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    simulate = commands.add_parser(
        "simulate", formatter_class=formatter, parents=[common],
        help="write a simulated data set in the DeepLense layout",
        description="Simulate HSC-like g, r, i cutouts of strong lenses and non-lenses into OUT_DIR/"
        "{train,test}_{lenses,nonlenses}/ plus metadata.csv. The default sizes are those of the real "
        "DeepLense Test II set (about 50,000 files, 2.4 GB).",
    )
    simulate.add_argument("out_dir", metavar="OUT_DIR", help="output folder (missing or empty)")
    simulate.add_argument("--n-train-lenses", type=_count, default=1730, metavar="N", help="train lenses")
    simulate.add_argument("--n-train-nonlenses", type=_count, default=28675, metavar="N", help="train non-lenses")
    simulate.add_argument("--n-test-lenses", type=_count, default=195, metavar="N", help="test lenses")
    simulate.add_argument("--n-test-nonlenses", type=_count, default=19455, metavar="N", help="test non-lenses")
    simulate.add_argument("--difficulty", choices=DIFFICULTIES, default="medium", help="simulation preset")
    simulate.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one each run)")
    simulate.add_argument("--jobs", type=_jobs, default=1, help="parallel workers (-1 = all cores)")
    simulate.add_argument("--overwrite", action="store_true", help="replace a data set in OUT_DIR")
    simulate.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return parser


def _dispatch(args):
    if args.command == "demo":
        run_demo(args.out, fast=args.fast, overwrite=args.overwrite, quiet=args.quiet)
    elif args.command == "train":
        params = {
            "max_epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
            "weight_decay": args.weight_decay, "arch": args.arch, "weights": args.weights,
            "balance": args.balance, "input_size": args.input_size, "device": args.device,
            "random_state": args.seed, "valid_size": args.valid_size,
            "early_stopping": args.early_stopping, "augment": not args.no_augment, "ema_epochs": args.ema_epochs,
            "keep": args.keep,
        }
        run_train(args.data_dir, args.out, params, **_layout_kwargs(args), errors=args.errors, cache=args.cache,
                  overwrite=args.overwrite, quiet=args.quiet, resume=args.resume)
    elif args.command == "evaluate":
        run_evaluate(args.model, args.data_dir, args.out, split=args.split, **_layout_kwargs(args), tta=args.tta,
                     prior=args.prior, threshold=args.threshold, errors=args.errors, device=args.device,
                     fit_size=args.fit_size, overwrite=args.overwrite, quiet=args.quiet)
    elif args.command == "predict":
        run_predict(args.model, args.inputs, args.out, catalog=args.catalog, **_layout_kwargs(args), tta=args.tta,
                    prior=args.prior, batch_size=args.batch_size, errors=args.errors, device=args.device,
                    fit_size=args.fit_size, scheduler=args.scheduler, block_rows=args.block_rows,
                    overwrite=args.overwrite, quiet=args.quiet)
    elif args.command == "pack":
        run_pack(args.inputs, args.out, split=args.split, **_layout_kwargs(args), chunk_rows=args.chunk_rows,
                 append=args.append, errors=args.errors, quiet=args.quiet)
    elif args.command == "simulate":
        run_simulate(args.out_dir, n_train_lenses=args.n_train_lenses, n_train_nonlenses=args.n_train_nonlenses,
                     n_test_lenses=args.n_test_lenses, n_test_nonlenses=args.n_test_nonlenses,
                     difficulty=args.difficulty, seed=args.seed, jobs=args.jobs, overwrite=args.overwrite,
                     quiet=args.quiet)


def _one_line(exc):
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in message:
        message = f"{exc.filename}: {message}"
    return message


def main(argv=None):
    """Run the ``lensclf`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code: 0 success, 1 a data, model or file problem, 2 bad usage,
        130 or 143 training interrupted by SIGINT or SIGTERM.
        (``--help``, ``--version`` and argparse's usage errors exit through
        ``SystemExit``, with codes 0 and 2.)
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "predict" and bool(args.inputs) == (args.catalog is not None):
        parser.error("predict: give INPUT files, folders or stores, or --catalog CSV (one of the two)")
    try:
        _dispatch(args)
    except KeyboardInterrupt as exc:
        # 128 + the signal number, as a shell reports a process ended by it
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except (LensDataError, ValueError, OSError, ImportError) as exc:
        if args.debug:
            raise
        print(f"lensclf: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
