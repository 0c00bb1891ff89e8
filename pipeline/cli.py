"""Command line of `run_local.py`.

    run_local.py [run options]           run the pipeline (the default command)
    run_local.py rollback [--to-version N] re-publish an earlier serving version as the newest
    run_local.py runs                    list past runs with their outcome and what was pushed
    run_local.py status                  what is serving now, and its lineage
    run_local.py download --dest DIR     fetch MNIST from the canonical mirrors, checksum-verified
    run_local.py predict FILE...         classify PNG / IDX digit files with the model serving now
    run_local.py report [RUN_ID]         (re)build a run's report.html (default: the newest run)
    run_local.py metadata restore        put the metadata store's latest good backup in place
    run_local.py compare --config A --config B ...  train several model modules, compare them paired

Exit status: 0 completed, 1 failure, 2 bad usage or configuration, 3 stopped by the data
validation gate, 4 another run holds the pipeline root, 128 + N stopped by signal N (143
SIGTERM, 130 SIGINT; `pipeline.core.interrupts`; 141 SIGPIPE: the reader of the output went away).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence

from components.example_gen import download
from pipeline.config import load_config, validate_config
from pipeline.core.artifacts import check_local_path
from pipeline.core.errors import (
    EXIT_FAILURE,
    EXIT_SIGNAL_BASE,
    EXIT_USAGE,
    ConfigError,
    Interrupted,
    PipelineError,
)
from pipeline.core.interrupts import stop_on_signals
from pipeline.core.runner import run_pipeline
from pipeline.factory import STEP_NAMES, create_pipeline
from pipeline.logs import configure_logging
from pipeline.metadata_settings import store_settings
from pipeline.operations import list_runs, restore_metadata, rollback, serving_status
from pipeline.predict import predict_files
from pipeline.report import rebuild_report

log = logging.getLogger("pipeline")

COMMANDS = ("run", "rollback", "runs", "status", "download", "predict", "report", "metadata", "compare")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML or JSON config file overriding the defaults in pipeline/config.py; "
        "unknown keys are rejected",
    )
    parser.add_argument(
        "--pipeline-root",
        metavar="DIR",
        help="where artifacts, metadata.sqlite and runs/ go (default: ./pipeline_output)",
    )
    parser.add_argument(
        "--serving-dir",
        metavar="DIR",
        help="where blessed models are published as <DIR>/<version>/ (default: <pipeline-root>/serving)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logs, including TensorFlow's and Beam's own"
    )


def build_run_parser() -> argparse.ArgumentParser:
    """The parser of the default `run` command."""
    parser = argparse.ArgumentParser(
        prog="run_local.py",
        description="Run the MNIST pipeline (ExampleGen, StatisticsGen, SchemaGen, ExampleValidator, "
        "Trainer, Evaluator, Pusher) with Apache Beam's DirectRunner by default. "
        f"Other commands: {', '.join(COMMANDS[1:])} (run_local.py COMMAND --help).",
        epilog="Exit status: 0 completed, 1 failure, 2 bad usage or configuration, "
        "3 stopped by the data validation gate, 4 another run holds the pipeline root, "
        "143 stopped by SIGTERM, 130 by SIGINT (the step it interrupted committed nothing).",
    )
    _add_common(parser)
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder with the four MNIST IDX .gz files, or span-N/ subfolders of them "
        "(default: the MNIST shipped in data/mnist)",
    )
    parser.add_argument(
        "--from",
        dest="from_step",
        choices=STEP_NAMES,
        metavar="STEP",
        help=f"start at STEP, reusing the latest outputs of earlier steps ({', '.join(STEP_NAMES)})",
    )
    parser.add_argument("--to", dest="to_step", choices=STEP_NAMES, metavar="STEP", help="stop after STEP")
    parser.add_argument(
        "--run-id",
        metavar="ID",
        help="add this call to the run ID (one run record runs/ID/, one summary and report) instead "
        "of starting a run of its own; its steps read the outputs of that run's earlier steps. "
        "Calls go in order and a step runs once per run; a failed step may be retried. "
        "ID: letters, digits and _ . ~ : + - (Airflow's run ids fit)",
    )
    parser.add_argument(
        "--summary-json",
        metavar="FILE",
        help="also write the run summary here (it always goes to <pipeline-root>/runs/<run_id>/summary.json)",
    )
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        metavar="OPTION",
        help="an Apache Beam pipeline option passed through unchanged, e.g. "
        "--beam-arg=--direct_running_mode=multi_processing; repeatable",
    )
    parser.add_argument(
        "--train-steps",
        type=int,
        metavar="N",
        help="override trainer.train_steps (the training budget), for quick runs",
    )
    parser.add_argument("--span", type=int, metavar="N", help="use span N instead of the newest")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    """CLI options as nested config overrides (applied after the config file)."""

    overrides: dict = {}
    if args.pipeline_root:
        overrides["pipeline_root"] = check_local_path("--pipeline-root", args.pipeline_root)
    if args.serving_dir:
        overrides.setdefault("pusher", {})["serving_dir"] = check_local_path(
            "--serving-dir", args.serving_dir
        )
    if getattr(args, "data_root", None):
        overrides.setdefault("data", {})["data_root"] = check_local_path("--data-root", args.data_root)
    if getattr(args, "span", None) is not None:
        overrides.setdefault("data", {})["span"] = args.span
    if getattr(args, "train_steps", None) is not None:
        overrides.setdefault("trainer", {})["train_steps"] = args.train_steps
    return overrides


def load(args: argparse.Namespace):
    """The resolved config for parsed `args` (file, then CLI overrides, then --beam-arg)."""

    config = load_config(args.config, _overrides(args))
    extra = tuple(getattr(args, "beam_arg", ()) or ())
    if extra:
        config = dataclasses.replace(config, beam_args=tuple(config.beam_args) + extra)

        validate_config(config)
    return config


def cmd_run(argv: Sequence[str]) -> int:
    args = build_run_parser().parse_args(argv)
    configure_logging(args.verbose)

    config = load(args)
    pipeline = create_pipeline(config)
    result = run_pipeline(pipeline, args.from_step, args.to_step, args.summary_json, args.run_id)
    states = ", ".join(f"{name}={step['state']}" for name, step in result.summary["steps"].items())
    log.info(
        "run %s %s (exit %d): %s",
        result.summary["run_id"],
        result.summary["status"],
        result.exit_code,
        states,
    )
    if result.exit_code != 0:
        print(f"error: {result.summary.get('message')}", file=sys.stderr)
    push = result.summary.get("push")
    if push:
        log.info(
            "push: %s",
            f"version {push.get('version')}" if push.get("pushed") else f"not pushed ({push.get('reason')})",
        )
    log.info("summary: %s", result.summary_path)
    return result.exit_code


def cmd_rollback(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="run_local.py rollback",
        description="Re-publish an earlier serving version as the newest version (recorded in ML Metadata).",
    )
    _add_common(parser)
    parser.add_argument(
        "--to-version",
        type=int,
        metavar="N",
        help="the version to re-publish (default: the one before the newest)",
    )
    args = parser.parse_args(argv)
    configure_logging(args.verbose)

    new_version, source = rollback(load(args), args.to_version)
    log.info("rolled back: version %d now serves the model of version %d", new_version, source)
    return 0


def cmd_runs(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="run_local.py runs", description="List past runs: outcome, spans, steps run, push."
    )
    _add_common(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    configure_logging(args.verbose)

    runs = list_runs(load(args))
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    width = max([26, *(len(run["run_id"]) for run in runs)])  # scheduler run ids are longer
    print(f"{'run id':<{width}} {'status':<10} {'exit':>4}  {'spans':<8} {'ran':>3} {'cached':>6}  push")
    for run in runs:
        print(
            f"{run['run_id']:<{width}} {run['status']:<10} {run['exit_code']:>4}  "
            f"{','.join(map(str, run['spans'])):<8} {run['ran']:>3} {run['cached']:>6}  {run['push']}"
        )
    return 0


def cmd_status(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="run_local.py status", description="What is serving now and where it came from."
    )
    _add_common(parser)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)

    print(json.dumps(serving_status(load(args)), indent=2))
    return 0


def cmd_download(argv: Sequence[str]) -> int:

    return download.main(list(argv), prog="run_local.py download")


def cmd_predict(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="run_local.py predict",
        description="Classify digits with the model serving now (the newest version in the serving "
        "dir), after checking its files against the digest recorded for its push in ML "
        "Metadata. Prints one line per digit: FILE[INDEX] -> DIGIT (CONFIDENCE).",
        epilog="PNG: any size or mode; MNIST digits are white on black, so an image brighter than "
        "mid-gray on average is inverted (--invert auto, noted on its line); images that are "
        "not 28x28 are cropped to the ink, scaled to fit 20x20 and centred like MNIST's. "
        "IDX: a gzip images file (magic 0x803), one line per record.",
    )
    _add_common(parser)
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="PNG images or gzip IDX images files (e.g. t10k-images-idx3-ubyte.gz)",
    )
    parser.add_argument(
        "--invert",
        choices=("auto", "yes", "no"),
        default="auto",
        help="invert to white-on-black: auto (when the mean is bright), yes, no",
    )
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help="load a served version that has no push record in ML Metadata",
    )
    args = parser.parse_args(argv)
    configure_logging(args.verbose)

    config = load(args)
    served, predictions = predict_files(
        args.files,
        config.serving_dir,
        config.pipeline_root,
        args.invert,
        args.allow_unverified,
        store_settings(config),
    )
    log.info(
        "model: serving version %d at %s (%s)",
        served.version,
        served.path,
        f"verified: digest {served.digest[:12]}... of model id {served.model_id}"
        if served.verified
        else "UNVERIFIED",
    )
    for prediction in predictions:
        print(prediction.line())
    return 0


def cmd_report(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="run_local.py report",
        description="(Re)build <pipeline-root>/runs/RUN_ID/report.html from the run's summary.json "
        "and artifacts (it only reads them: no model is loaded).",
    )
    _add_common(parser)
    parser.add_argument("run_id", nargs="?", metavar="RUN_ID", help="default: the newest run")
    args = parser.parse_args(argv)
    configure_logging(args.verbose)

    print(rebuild_report(load(args).pipeline_root, args.run_id))
    return 0


def cmd_compare(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="run_local.py compare",
        description="Train the model of each config (its [trainer] module_file) on the same data, "
        "up to the evaluator (nothing is pushed), all on one pipeline root, and write one "
        "HTML page comparing them pairwise on the same test digits with the gate's paired "
        "statistics (McNemar, Newcombe interval, Holm over the digit slices).",
        epilog="The configs must agree on data.* and evaluator.max_examples; the page goes to "
        "<pipeline-root>/comparisons/<id>/comparison.html (and comparison.json).",
    )
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        metavar="FILE",
        dest="configs",
        help="a config file (TOML or JSON) naming one model; give two or more",
    )
    parser.add_argument(
        "--pipeline-root",
        metavar="DIR",
        help="the root all models share (default: the configs' pipeline_root)",
    )
    parser.add_argument("--data-root", metavar="DIR", help="the raw data, for every config")
    parser.add_argument(
        "--train-steps", type=int, metavar="N", help="override trainer.train_steps for every config"
    )
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        metavar="OPTION",
        help="an Apache Beam pipeline option passed through unchanged; repeatable",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    parser.set_defaults(serving_dir=None)  # nothing is pushed: no serving folder to name
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    # scipy and the comparison page load in about 1 s: only `compare` pays for them.
    from pipeline.compare import compare  # noqa: PLC0415

    print(compare(args.configs, _overrides(args), args.beam_arg))
    return 0


def cmd_metadata(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="run_local.py metadata", description="Look after the ML Metadata store (metadata.sqlite)."
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    restore = actions.add_parser(
        "restore",
        help="put the latest good backup of the store in place",
        description="Replace <pipeline-root>/metadata.sqlite with its backup metadata.sqlite.backup "
        "(written after every completed run), keeping the replaced file as "
        "metadata.sqlite.damaged-<UTC time>. Refused while a run holds the pipeline root "
        "(exit 4), and when the backup is missing or damaged too (exit 1).",
    )
    _add_common(restore)
    restore.add_argument(
        "--force", action="store_true", help="replace the store even when it passes its integrity check"
    )
    args = parser.parse_args(argv)
    configure_logging(args.verbose)

    store, kept = restore_metadata(load(args), args.force)
    log.info(
        "restored %s from its backup%s", store, f"; the file it replaced is kept as {kept}" if kept else ""
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else "run"
    if argv and argv[0] == command:
        argv = argv[1:]
    handler = {
        "run": cmd_run,
        "rollback": cmd_rollback,
        "runs": cmd_runs,
        "status": cmd_status,
        "download": cmd_download,
        "predict": cmd_predict,
        "report": cmd_report,
        "metadata": cmd_metadata,
        "compare": cmd_compare,
    }[command]
    # A run (or a comparison's runs) stops cleanly on SIGTERM / SIGINT; the other commands keep
    # Python's defaults.
    stoppable = contextlib.nullcontext() if command not in ("run", "compare") else stop_on_signals()
    try:
        with stoppable:
            return handler(argv)
    except Interrupted as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_SIGNAL_BASE + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (`predict ... | head`): stop quietly, as a Unix filter does, and
        # point stdout at /dev/null so the interpreter's final flush raises nothing either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SIGNAL_BASE + signal.SIGPIPE
    except Exception as e:  # noqa: BLE001 - one clear line first, then the detail
        print(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        traceback.print_exc()
        return EXIT_FAILURE


__all__ = ["main", "build_run_parser", "EXIT_USAGE", "ConfigError"]
