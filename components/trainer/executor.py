"""The Trainer step: trains the CNN on the train split, keeps the best model by eval accuracy.

Inputs:
- `examples` (Examples): `Split-train` for training, `Split-eval` for periodic evaluation.
- `schema` (Schema): checked to describe the `image` and `label` features the trainer reads.
- `base_model` (Model, optional): warm-start source when `trainer.warm_start` is set; its files
  must match its recorded digest.
Outputs:
- `model` (Model): `Format-Serving/` (the best evaluation's SavedModel, see `export`) and
  `model_digest.json`; property `digest`.
- `model_run` (ModelRun): checkpoints, TensorBoard event files (train and eval/), and
  `training_history.json` (one record per evaluation plus the run's summary).
Params: a `TrainerConfig`.
Execution properties: best_eval_accuracy / _loss / _step, final_eval_accuracy, steps_trained,
stopped_early, evaluations_run, train_examples_per_sec, train_seconds, warm_started.
Raises TrainingError (NaN/Inf loss, no evaluation, broken export), ModelIntegrityError (base
model digest), ConfigError (base model architecture differs), InputDataError (missing or empty
split, a schema without the trainer's features, records that do not parse). On any error
nothing is written into `model`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import tensorflow as tf

from components.trainer import export, inputs
from components.trainer.exporters import BestAccuracyExporter, EvalHistory
from components.trainer.hooks import NonFiniteLossHook, ProgressHook
from components.trainer.model import model_fn
from components.trainer.warm_start import warm_start_settings
from pipeline.core.errors import InputDataError, TrainingError
from pipeline.core.step import StepContext, StepOutcome
from pipeline.formats import examples as examples_format, model as model_format

# Records of the eval split fed to both serving signatures to check the exported model.
VERIFY_RECORDS = 16
# Progress lines per evaluation interval.
LOGS_PER_EVAL = 5


def _first_line(error: Exception) -> str:
    """The first informative line of a TensorFlow error (not its "Graph execution error:"
    header nor a "[[node ...]]" trace line)."""
    message = getattr(error, "message", None) or str(error)
    for line in message.splitlines():
        line = line.strip()
        if line and line != "Graph execution error:" and not line.startswith("[["):
            return line
    return type(error).__name__


def _train_and_evaluate(estimator, train_spec, eval_spec, examples_uri: str) -> None:
    """Runs tf.estimator.train_and_evaluate, turning data errors into InputDataError."""
    try:
        tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
    except tf.errors.DataLossError as e:
        raise InputDataError(f"examples {examples_uri}: corrupt TFRecord data ({_first_line(e)})") from e
    except tf.errors.InvalidArgumentError as e:
        message = _first_line(e)
        if "Key: " in message or "Feature" in message or "label value" in message:
            raise InputDataError(f"examples {examples_uri}: records do not fit the trainer's "
                                 f"features (image int64 x 784, label int64 0..9): {message}") from e
        raise TrainingError(f"training failed: {message}") from e


def _publish_best_export(best_export_dir: str, model_uri: str, run_dir: str, sample) -> str:
    """Names the best export's signatures, checks it answers `sample` (serialized records,
    images) on both, then moves it to `<model_uri>/Format-Serving`; returns that path.

    Checking before the move keeps `model` empty when the export is broken (TrainingError).
    The exporter's then empty folder (`<run_dir>/export`) is removed.
    """
    export.rename_signatures(best_export_dir,
                             {export.ESTIMATOR_IMAGES_SIGNATURE: model_format.IMAGES_SIGNATURE})
    export.verify_serving_model(best_export_dir, *sample)
    serving_dir = os.path.join(model_uri, model_format.SERVING_SUBDIR)
    shutil.move(best_export_dir, serving_dir)
    shutil.rmtree(os.path.join(run_dir, "export"))
    return serving_dir


def _make_estimator(cfg, run_dir: str, warm_start) -> tf.estimator.Estimator:
    """The Estimator: checkpoints every evaluation interval, seeded, optionally warm started."""
    return tf.estimator.Estimator(
        model_fn=model_fn,
        params=dataclasses.asdict(cfg),
        config=tf.estimator.RunConfig(
            model_dir=run_dir,
            save_checkpoints_steps=cfg.eval_every_steps,
            keep_checkpoint_max=cfg.keep_checkpoints,
            tf_random_seed=cfg.random_seed,
        ),
        warm_start_from=warm_start,
    )


def _training_hooks(cfg, estimator, log) -> tuple:
    """(hooks for the TrainSpec, the ProgressHook among them): NaN guard, progress, early stop."""
    progress = ProgressHook(cfg.batch_size, cfg.train_steps,
                            every_steps=max(1, cfg.eval_every_steps // LOGS_PER_EVAL), log=log,
                            checkpoint_every_steps=cfg.eval_every_steps)
    hooks = [NonFiniteLossHook(), progress]
    if cfg.early_stopping_evals > 0:
        # Checked on the steps that checkpoint and evaluate (the check reads the eval event
        # files), right after that step's evaluation.
        hooks.append(tf.estimator.experimental.stop_if_no_increase_hook(
            estimator, "accuracy",
            max_steps_without_increase=cfg.early_stopping_evals * cfg.eval_every_steps,
            run_every_secs=None, run_every_steps=cfg.eval_every_steps))
    return hooks, progress


def run(ctx: StepContext) -> StepOutcome:
    """Trains, evaluates and exports the model; see the module docstring for the contract."""
    cfg = ctx.params
    log = ctx.log
    examples = ctx.inputs["examples"]
    model_uri, run_dir = ctx.outputs["model"], ctx.outputs["model_run"]
    inputs.check_schema(ctx.inputs["schema"].uri)
    # Fail fast on an empty split or records of another shape, before any graph is built.
    inputs.read_sample(examples_format.split_files(examples.uri, "train"), 1)
    sample = inputs.read_sample(examples_format.split_files(examples.uri, "eval"), VERIFY_RECORDS)

    warm_start = None
    if cfg.warm_start and "base_model" in ctx.inputs:
        base = ctx.inputs["base_model"]
        warm_start = warm_start_settings(base, dataclasses.asdict(cfg))
        log.info("warm starting from model %s (id %s)", base.uri, base.id)
    elif cfg.warm_start:
        log.info("trainer.warm_start is set but there is no base model yet; training from scratch")

    estimator = _make_estimator(cfg, run_dir, warm_start)
    hooks, progress = _training_hooks(cfg, estimator, log)
    history = EvalHistory(log)
    best_exporter = BestAccuracyExporter(export.serving_input_receiver_fn)
    train_spec = tf.estimator.TrainSpec(
        input_fn=inputs.make_input_fn(examples.uri, "train", cfg.batch_size, training=True,
                                      seed=cfg.random_seed),
        max_steps=cfg.train_steps, hooks=hooks)
    eval_spec = tf.estimator.EvalSpec(
        input_fn=inputs.make_input_fn(examples.uri, "eval", cfg.batch_size, training=False,
                                      max_examples=cfg.eval_examples),
        steps=None, exporters=[history, best_exporter], start_delay_secs=0, throttle_secs=0)

    log.info("training up to %d steps (batch %d, %s lr %g), evaluating every %d steps; "
             "split counts %s", cfg.train_steps, cfg.batch_size, cfg.optimizer, cfg.learning_rate,
             cfg.eval_every_steps, examples.properties.get(examples_format.SPLIT_COUNTS, "unknown"))
    started = time.perf_counter()
    _train_and_evaluate(estimator, train_spec, eval_spec, examples.uri)
    train_seconds = time.perf_counter() - started

    best = history.best()
    if best is None or best_exporter.best_export_dir is None:
        raise TrainingError(f"training in {run_dir} ended without an evaluation or export")
    if best_exporter.best_eval_result["global_step"] != best["step"]:
        raise TrainingError(f"best export (step {best_exporter.best_eval_result['global_step']}) "
                            f"does not match the best evaluation (step {best['step']})")
    steps_trained = int(estimator.get_variable_value(tf.compat.v1.GraphKeys.GLOBAL_STEP))
    stopped_early = steps_trained < cfg.train_steps

    serving_dir = _publish_best_export(best_exporter.best_export_dir, model_uri, run_dir, sample)
    digest = model_format.write_model_digest(model_uri)

    rate = progress.examples_per_sec
    summary = {
        "best_eval_accuracy": best["accuracy"],
        "best_eval_loss": best["loss"],
        "best_eval_step": best["step"],
        "final_eval_accuracy": history.evaluations[-1]["accuracy"],
        "steps_trained": steps_trained,
        "stopped_early": stopped_early,
        "evaluations_run": len(history.evaluations),
        "train_examples_per_sec": round(rate, 1) if rate else None,
        "train_seconds": round(train_seconds, 2),
        "warm_started": warm_start is not None,
    }
    with open(os.path.join(run_dir, model_format.HISTORY_FILE), "w") as f:
        json.dump({"evaluations": history.evaluations, **summary}, f, indent=2)
        f.write("\n")
    log.info("trained %d steps%s; best eval accuracy %.4f at step %d; %s examples/s; "
             "exported %s (digest %s)", steps_trained, " (stopped early)" if stopped_early else "",
             best["accuracy"], best["step"], summary["train_examples_per_sec"], serving_dir,
             digest[:12])
    return StepOutcome(execution_properties=summary,
                       output_properties={"model": {model_format.DIGEST: digest}})
