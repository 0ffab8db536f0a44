"""``iotad train``: historical readings (CSV, Parquet) in, a model artifact out.

Cheap to import: TensorFlow is imported by the pipeline only after the data has been read.
Input and option errors print one line and exit 2; a failed export check exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILED = 1


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``iotad train`` flags (defaults are `training.pipeline.TrainConfig`'s)."""
    parser.add_argument(
        "data",
        nargs="+",
        type=Path,
        help="CSV or Parquet files, or directories of them (e.g. what `iotad record` wrote, "
        "read in name order): long 'ts,device,metric,value', NAB 'timestamp,value', or "
        "wide (a ts column plus one column per metric, with --device)",
    )
    parser.add_argument("--out", type=Path, help="artifact directory (default models/<version>)")
    parser.add_argument("--device", help="device name of wide and NAB files (NAB: file stem)")
    model = parser.add_argument_group("model")
    model.add_argument("--cell", choices=("lstm", "gru", "simplernn"), default="lstm")
    model.add_argument(
        "--units", type=_int_list, default=(32,), help="units, or a comma list per layer (32)"
    )
    model.add_argument("--layers", type=int, default=1, help="stacked recurrent layers (1)")
    model.add_argument(
        "--bidirectional", action="store_true", help="bidirectional encoder over the past window"
    )
    model.add_argument(
        "--no-residual",
        action="store_true",
        help="forecast the value itself, not the change from the last value",
    )
    model.add_argument("--window", type=int, default=32, help="readings per input window (32)")
    model.add_argument(
        "--time-features",
        action="store_true",
        help="add time-of-day and day-of-week sine/cosine inputs",
    )
    data = parser.add_argument_group("data and fitting")
    data.add_argument("--scaling", choices=("standard", "minmax"), default="standard")
    data.add_argument(
        "--split", type=float, default=0.8, help="time-ordered training fraction per series (0.8)"
    )
    data.add_argument("--epochs", type=int, default=30, help="at most this many epochs (30)")
    data.add_argument("--batch-size", type=int, default=256, help="training batch size (256)")
    data.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (0.001)")
    data.add_argument(
        "--patience", type=int, default=5, help="early stopping patience in epochs (5)"
    )
    data.add_argument("--seed", type=int, default=0, help="random seed (0)")
    data.add_argument(
        "--alert-budget",
        type=float,
        default=0.05,
        help="alerts per series per day the held-out history may raise; the alert "
        "calibration stored in the artifact is chosen for it (0.05; 0: no calibration)",
    )
    data.add_argument(
        "--no-device-models",
        action="store_true",
        help="do not train the device models (one per set of metrics a device reports: "
        "each reading judged against the device's other sensors now and its recent past)",
    )
    data.add_argument(
        "--max-windows",
        type=int,
        default=8192,
        help="training windows per epoch, a fresh seeded sample each epoch; 0: all (8192)",
    )
    data.add_argument(
        "--export-batch-sizes",
        type=_int_list,
        default=(1, 8, 64),
        help="LiteRT batch sizes to export, e.g. 1,8,64,1024 (1,8,64; 64 is model.tflite)",
    )
    data.add_argument("--no-plots", action="store_true", help="skip forecast.png and loss.png")
    cont = parser.add_argument_group("continuing a model (docs/model-lifecycle.md)")
    cont.add_argument(
        "--from",
        dest="parent",
        type=Path,
        metavar="ARTIFACT",
        help="fine-tune this artifact's model on the data: its shape and weights, and its "
        "normalisation of every series whose new data fits its stored range",
    )
    cont.add_argument(
        "--fit-margin",
        type=float,
        default=0.25,
        help="how far (fraction of a series' stored span, each side) new data may leave the "
        "parent's range and keep its normalisation (0.25)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def main(args: argparse.Namespace) -> int:
    """Run ``iotad train``; returns the exit status."""
    from training.extras import is_train_module_error, train_extra_problem

    # Checked before the data is read: without TensorFlow nothing can come of it.
    problem = train_extra_problem(
        "iotad train", ("tensorflow",) if args.no_plots else ("tensorflow", "matplotlib")
    )
    if problem:
        print(problem, file=sys.stderr)
        return EXIT_FAILED
    from detector.engine.artifact import ArtifactError
    from training.artifact_writer import ArtifactWriteError
    from training.data import DataError
    from training.export import ExportMismatchError
    from training.pipeline import TrainConfig, summary_lines, train

    cfg = TrainConfig(
        data=list(args.data),
        out=args.out,
        cell=args.cell,
        units=args.units,
        layers=args.layers,
        bidirectional=args.bidirectional,
        residual=not args.no_residual,
        window=args.window,
        scaling=args.scaling,
        split=args.split,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        seed=args.seed,
        time_features=args.time_features,
        quiet=args.quiet,
        device=args.device,
        max_windows=args.max_windows or None,
        batch_sizes=args.export_batch_sizes,
        plots=not args.no_plots,
        alert_budget=args.alert_budget,
        device_models=not args.no_device_models,
        parent=args.parent,
        fit_margin=args.fit_margin,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"iotad train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = train(cfg)
    except (DataError, ArtifactWriteError) as exc:
        print(f"iotad train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ExportMismatchError, ArtifactError) as exc:
        print(f"iotad train: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"iotad train: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("iotad train: interrupted; no artifact written", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        if not is_train_module_error(exc):
            raise
        # a part of the extra the check above does not name (keras alone, a broken install)
        print(train_extra_problem("iotad train", (exc.name or "",)), file=sys.stderr)
        return EXIT_FAILED
    for line in summary_lines(result.report):
        print(line)
    return 0
