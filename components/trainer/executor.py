"""The Trainer step: trains the module's network on the train split, exports the checkpoint
`exporters.choose` picks on eval accuracy (the latest within `trainer.best_checkpoint_tolerance`
of the best).

Inputs:
- `examples` (Examples): `Split-train` for training, `Split-eval` for periodic evaluation.
- `schema` (Schema): checked to describe the `image` and `label` features the trainer reads.
- `base_model` (Model, optional): warm-start source when `trainer.warm_start` is set; its files
  must match its recorded digest, and it must come from the same module file content.
- `module_file` (TrainerModule): the `trainer.module_file` by content digest; the bytes that
  run must still have it (`user_module`). Absent when the executor is called directly: the
  file `trainer.module_file` names is then taken as it is.
Outputs:
- `model` (Model): `Format-Serving/` (the chosen evaluation's SavedModel, see `export`) and
  `model_digest.json`; properties `digest`, `module_file`, `module_digest`.
- `model_run` (ModelRun): checkpoints, TensorBoard event files (train and eval/), and
  `training_history.json` (one record per evaluation plus the run's summary).
Params: `TrainerParams`.
Execution properties: best_eval_accuracy / _loss / _step (the exported, chosen evaluation),
top_eval_accuracy / _step (the highest eval accuracy: `choose` with tolerance 0),
final_eval_accuracy, steps_trained, stopped_early, evaluations_run, train_examples_per_sec,
train_seconds, warm_started (a warm start trains `trainer.warm_start_steps` steps),
warm_start_skipped (why a base model's weights did not fit, so training started from scratch;
None otherwise), precision (what `trainer.precision` resolved to: float32 or
mixed_bfloat16) and precision_reason (why, e.g. the probe's measured speedup), module_file,
module_digest, model_entry_point; with `trainer.workers` > 0 also `cluster`
({"chief": 1, "worker": N, "ps": M}).
Training runs in this process, or with `trainer.workers` > 0 on a local TensorFlow cluster
(`cluster`: chief, workers and parameter servers as processes; the chief evaluates and exports,
this process publishes as in one process). A cluster task that fails fails the step with one
line naming it.
Raises TrainingError (NaN/Inf loss, no evaluation, broken export), ModelIntegrityError (base
model digest), ConfigError (a module that does not import or breaks the Estimator contract,
checked before any training step),
InputDataError (a module file that changed during the run, missing or empty
split, a schema without the trainer's features, records that do not parse). On any error
nothing is written into `model`.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
import time

import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from components.trainer import cluster, export, inputs, precision
from components.trainer.exporters import BestAccuracyExporter, EvalHistory, choose
from components.trainer.hooks import NonFiniteLossHook, ProgressHook
from components.trainer.params import TrainerParams
from components.trainer.result import TrainingResult
from components.trainer.user_module import load_checked, model_fn_for
from components.trainer.warm_start import BaseModelMismatch, verified_starts
from components.trainer.warm_start import settings as warm_start_from
from pipeline.core.errors import InputDataError, TrainingError, WriteFaultError, write_fault
from pipeline.core.step import StepContext, StepOutcome
from pipeline.formats import examples as examples_format
from pipeline.formats import model as model_format

# Records of the eval split fed to both serving signatures to check the exported model.
VERIFY_RECORDS = 16
# Progress lines per evaluation interval.
LOGS_PER_EVAL = 5


def _first_line(error: Exception) -> str:
    """The first informative line of a TensorFlow error: not its "Graph execution error:"
    header, nor the "Detected at node ... defined at" traceback (its indented lines and the
    "Node: ..." line after it), nor a "[[node ...]]" trace line."""
    message = getattr(error, "message", None) or str(error)
    for raw in message.splitlines():
        line = raw.strip()
        if (
            not line
            or raw[:1] in (" ", "\t")
            or line == "Graph execution error:"
            or line.startswith(("[[", "Detected at node", "Node: "))
        ):
            continue
        return line
    return type(error).__name__


# How TensorFlow's file system reports a failed write: "<path>; <strerror>" on a line of its own.
_TF_WRITE_FAULT = re.compile(
    r"^(?P<path>/.*); (?P<reason>"
    + "|".join(
        re.escape(os.strerror(n)) for n in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EIO)
    )
    + r")$",
    re.M,
)


def _tf_write_fault(error: tf.errors.OpError) -> WriteFaultError | None:
    """A WriteFaultError naming the file and the reason when `error` is TensorFlow failing to
    write a file (a checkpoint, the export); None for any other error."""
    found = _TF_WRITE_FAULT.search(getattr(error, "message", None) or str(error))
    return WriteFaultError(f"cannot write {found['path']}: {found['reason']}") if found else None


def _train_and_evaluate(estimator, train_spec, eval_spec, examples_uri: str) -> None:
    """Runs tf.estimator.train_and_evaluate, turning data errors into InputDataError and a file
    it cannot write (a checkpoint, the export: full disk, read-only) into WriteFaultError."""
    try:
        tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
    except tf.errors.DataLossError as e:
        raise InputDataError(f"examples {examples_uri}: corrupt TFRecord data ({_first_line(e)})") from e
    except tf.errors.InvalidArgumentError as e:
        message = _first_line(e)
        if "Key: " in message or "Feature" in message or "label value" in message:
            raise InputDataError(
                f"examples {examples_uri}: records do not fit the trainer's "
                f"features (image int64 x 784, label int64 0..9): {message}"
            ) from e
        raise TrainingError(f"training failed: {message}") from e
    except tf.errors.OpError as e:
        fault = _tf_write_fault(e)
        if fault is None:
            raise
        raise fault from e


def _publish_best_export(best_export_dir: str, model_uri: str, run_dir: str, sample) -> str:
    """Names the best export's signatures, checks it answers `sample` (serialized records,
    images) on both, then moves it to `<model_uri>/Format-Serving`; returns that path.

    Checking before the move keeps `model` empty when the export is broken (TrainingError).
    The exporter's then empty folder (`<run_dir>/export`) is removed. Raises WriteFaultError
    naming the file when the model cannot be written where it goes (the launcher then removes
    the step's staging folders).
    """
    export.rename_signatures(
        best_export_dir, {export.ESTIMATOR_IMAGES_SIGNATURE: model_format.IMAGES_SIGNATURE}
    )
    export.verify_serving_model(best_export_dir, *sample)
    serving_dir = os.path.join(model_uri, model_format.SERVING_SUBDIR)
    try:
        export.move_tree(best_export_dir, serving_dir)
    except OSError as e:  # e.g. no space left where the model goes: one line naming the file
        raise write_fault("", e) from e
    shutil.rmtree(os.path.join(run_dir, "export"))
    return serving_dir


def _make_estimator(cfg: TrainerParams, run_dir: str, warm_start) -> tf.estimator.Estimator:
    """The Estimator: checkpoints every evaluation interval, seeded, optionally warm started."""
    return tf.estimator.Estimator(
        # The module that cfg.module_file names (loaded once per process and digest).
        model_fn=model_fn_for(cfg),
        params=dataclasses.asdict(cfg),
        config=_run_config(cfg, run_dir),
        warm_start_from=warm_start,
    )


def _run_config(cfg: TrainerParams, run_dir: str) -> tf.estimator.RunConfig:
    """The RunConfig: checkpoints every evaluation interval, seeded; on a cluster in bfloat16,
    the task's session without Grappler's remapper (see below)."""
    config = tf.estimator.RunConfig(
        model_dir=run_dir,
        save_checkpoints_steps=cfg.eval_every_steps,
        keep_checkpoint_max=cfg.keep_checkpoints,
        tf_random_seed=cfg.random_seed,
    )
    if config.session_config is not None and cfg.precision == precision.MIXED_BFLOAT16:
        # A cluster task's grpc session does not rewrite the remapper's fused Conv2D into
        # oneDNN's, and the plain _FusedConv2D has no bfloat16 kernel ("Value for attr 'T' of
        # bfloat16 is not in the list of allowed values"). Edit a copy of the RunConfig's
        # distributed default so its device filters stay.
        session_config = tf.compat.v1.ConfigProto()
        session_config.CopyFrom(config.session_config)
        session_config.graph_options.rewrite_options.remapping = rewriter_config_pb2.RewriterConfig.OFF
        config = config.replace(session_config=session_config)
    return config


def _training_hooks(cfg: TrainerParams, estimator, log) -> tuple:
    """(hooks for the TrainSpec, the ProgressHook among them): NaN guard, progress, early stop."""
    progress = ProgressHook(
        cfg.batch_size,
        cfg.train_steps,
        every_steps=max(1, cfg.eval_every_steps // LOGS_PER_EVAL),
        log=log,
        checkpoint_every_steps=cfg.eval_every_steps,
    )
    hooks = [NonFiniteLossHook(), progress]
    if cfg.early_stopping_evals > 0:
        # Checked on the steps that checkpoint and evaluate (the check reads the eval event
        # files), right after that step's evaluation.
        hooks.append(
            tf.estimator.experimental.stop_if_no_increase_hook(
                estimator,
                "accuracy",
                max_steps_without_increase=cfg.early_stopping_evals * cfg.eval_every_steps,
                run_every_secs=None,
                run_every_steps=cfg.eval_every_steps,
            )
        )
    return hooks, progress


@dataclasses.dataclass
class Training:
    """One process's training set-up (`build_training`): the Estimator, its specs, and the hook
    and exporters that record throughput, evaluations and the best export."""

    estimator: tf.estimator.Estimator
    train_spec: tf.estimator.TrainSpec
    eval_spec: tf.estimator.EvalSpec
    progress: ProgressHook
    history: EvalHistory
    best_exporter: BestAccuracyExporter

    def train_and_evaluate(self, examples_uri: str) -> float:
        """Runs `tf.estimator.train_and_evaluate` (as this process's TF_CONFIG says: alone, or
        as one task of a cluster); returns its wall seconds. Raises as `_train_and_evaluate`."""
        started = time.perf_counter()
        _train_and_evaluate(self.estimator, self.train_spec, self.eval_spec, examples_uri)
        return time.perf_counter() - started

    def result(self, train_seconds: float) -> TrainingResult:
        """What this process's training produced, after `train_and_evaluate` returned."""
        best_eval = self.best_exporter.best_eval_result
        checkpoint = tf.train.latest_checkpoint(self.estimator.model_dir)
        steps = (
            int(tf.train.load_variable(checkpoint, tf.compat.v1.GraphKeys.GLOBAL_STEP)) if checkpoint else 0
        )
        return TrainingResult(
            evaluations=list(self.history.evaluations),
            best=self.history.best(),
            best_export_dir=self.best_exporter.best_export_dir,
            best_export_step=int(best_eval["global_step"]) if best_eval else None,
            steps_trained=steps,
            examples_per_sec=self.progress.examples_per_sec,
            train_seconds=train_seconds,
        )


def build_training(
    cfg: TrainerParams, examples_uri: str, run_dir: str, warm_start, log, saving_listeners=()
) -> Training:
    """The Estimator (`_make_estimator`), train spec (NaN guard, progress, early stopping,
    `saving_listeners`) and eval spec (history and best-export exporters) for `cfg` on the
    Examples artifact at `examples_uri`, with checkpoints in `run_dir`. Every cluster task
    builds its training through here too (components/trainer/cluster_task.py)."""
    estimator = _make_estimator(cfg, run_dir, warm_start)
    hooks, progress = _training_hooks(cfg, estimator, log)
    history = EvalHistory(log, tolerance=cfg.best_checkpoint_tolerance)
    best_exporter = BestAccuracyExporter(export.serving_input_receiver_fn, history)
    train_spec = tf.estimator.TrainSpec(
        input_fn=inputs.make_input_fn(
            examples_uri, "train", cfg.batch_size, training=True, seed=cfg.random_seed
        ),
        max_steps=cfg.train_steps,
        hooks=hooks,
        saving_listeners=saving_listeners,
    )
    eval_spec = tf.estimator.EvalSpec(
        input_fn=inputs.make_input_fn(
            examples_uri, "eval", cfg.batch_size, training=False, max_examples=cfg.eval_examples
        ),
        steps=None,
        exporters=[history, best_exporter],
        start_delay_secs=0,
        throttle_secs=0,
    )
    return Training(estimator, train_spec, eval_spec, progress, history, best_exporter)


def _train_in_process(cfg: TrainerParams, examples_uri: str, run_dir: str, warm_start, log) -> TrainingResult:
    """Trains and evaluates in this process (`trainer.workers` = 0)."""
    if os.environ.pop("TF_CONFIG", None) is not None:
        # RunConfig would otherwise make this process a task of whatever cluster it names.
        log.warning(
            "ignoring TF_CONFIG from the environment: trainer.workers = 0 trains in this "
            "process (set trainer.workers to train on a cluster)"
        )
    training = build_training(cfg, examples_uri, run_dir, warm_start, log)
    return training.result(training.train_and_evaluate(examples_uri))


def run(ctx: StepContext[TrainerParams]) -> StepOutcome:
    """Trains, evaluates and exports the model; see the module docstring for the contract."""
    cfg = ctx.params
    log = ctx.log
    examples = ctx.inputs["examples"]
    model_uri, run_dir = ctx.outputs["model"], ctx.outputs["model_run"]
    inputs.check_schema(ctx.inputs["schema"].uri)
    # Fail fast on an empty split or records of another shape, before any graph is built.
    inputs.read_sample(examples_format.split_files(examples.uri, "train"), 1)
    sample = inputs.read_sample(examples_format.split_files(examples.uri, "eval"), VERIFY_RECORDS)
    # Decided once here, so that every graph and every cluster task computes alike.
    resolved_precision, why = precision.resolve(cfg.precision)
    cfg = dataclasses.replace(cfg, precision=resolved_precision)
    log.info("precision: %s", why)
    # The module's contract is checked in a scratch graph before any training step.
    module = load_checked(cfg, ctx.inputs.get("module_file"))
    log.info("model: %s of %s (sha256 %s)", module.entry_point, module.path, module.digest[:12])

    warm_start, warm_start_skipped = None, None
    if cfg.warm_start and "base_model" in ctx.inputs:
        base = ctx.inputs["base_model"]
        try:
            # (checkpoint, {variable: base name}): the same for one process and every cluster task.
            warm_start = verified_starts(base, dataclasses.asdict(cfg), module)
        except BaseModelMismatch as e:
            warm_start_skipped = str(e)
            log.warning("not warm starting (trainer.warm_start): %s; training from scratch", e)
        else:
            cfg = cfg.for_warm_start()
            log.info(
                "warm starting from model %s (id %s): its own schedule of %d steps (trainer.warm_start_steps)",
                base.uri,
                base.id,
                cfg.train_steps,
            )
    elif cfg.warm_start:
        log.info("trainer.warm_start is set but there is no base model yet; training from scratch")

    log.info(
        "training up to %d steps (batch %d, %s lr %g), evaluating every %d steps; split counts %s",
        cfg.train_steps,
        cfg.batch_size,
        cfg.optimizer,
        cfg.learning_rate,
        cfg.eval_every_steps,
        examples.properties.get(examples_format.SPLIT_COUNTS, "unknown"),
    )
    # Leftovers of a killed cluster run are ended whatever this run trains on.
    cluster.clean_leftovers(cluster.registry_path(ctx.pipeline_root, ctx.step_name), log)
    if cfg.workers > 0:
        result = cluster.train_on_cluster(
            cfg,
            examples.uri,
            run_dir,
            warm_start,
            cluster.registry_path(ctx.pipeline_root, ctx.step_name),
            log,
            module.digest,
        )
    else:
        result = _train_in_process(
            cfg, examples.uri, run_dir, warm_start_from(*warm_start) if warm_start else None, log
        )

    best = result.best
    if best is None or result.best_export_dir is None:
        raise TrainingError(f"training in {run_dir} ended without an evaluation or export")
    if result.best_export_step != best["step"]:
        raise TrainingError(
            f"the exported checkpoint (step {result.best_export_step}) is not "
            f"the chosen evaluation's (step {best['step']})"
        )
    top = choose(result.evaluations, 0.0)
    steps_trained = result.steps_trained
    stopped_early = steps_trained < cfg.train_steps

    serving_dir = _publish_best_export(result.best_export_dir, model_uri, run_dir, sample)
    digest = model_format.write_model_digest(model_uri)

    rate = result.examples_per_sec
    summary = {
        "best_eval_accuracy": best["accuracy"],
        "best_eval_loss": best["loss"],
        "best_eval_step": best["step"],
        "top_eval_accuracy": top["accuracy"],
        "top_eval_step": top["step"],
        "final_eval_accuracy": result.evaluations[-1]["accuracy"],
        "steps_trained": steps_trained,
        "stopped_early": stopped_early,
        "evaluations_run": len(result.evaluations),
        "train_examples_per_sec": round(rate, 1) if rate else None,
        "train_seconds": round(result.train_seconds, 2),
        "warm_started": warm_start is not None,
        "warm_start_skipped": warm_start_skipped,
        "precision": resolved_precision,
        "precision_reason": why,
        "module_file": module.path,
        "module_digest": module.digest,
        "model_entry_point": module.entry_point,
    }
    if cfg.workers > 0:
        summary["cluster"] = cluster.layout(cfg.workers, cfg.parameter_servers)
    with open(os.path.join(run_dir, model_format.HISTORY_FILE), "w") as f:
        json.dump({"evaluations": result.evaluations, **summary}, f, indent=2)
        f.write("\n")
    log.info(
        "trained %d steps%s; exported step %d (eval accuracy %.4f; the highest, %.4f, at "
        "step %d); %s examples/s; exported %s (digest %s)",
        steps_trained,
        " (stopped early)" if stopped_early else "",
        best["step"],
        best["accuracy"],
        top["accuracy"],
        top["step"],
        summary["train_examples_per_sec"],
        serving_dir,
        digest[:12],
    )
    return StepOutcome(
        execution_properties=summary,
        output_properties={
            "model": {
                model_format.DIGEST: digest,
                model_format.MODULE_FILE: module.path,
                model_format.MODULE_DIGEST: module.digest,
            }
        },
    )
