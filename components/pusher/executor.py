"""The pusher step: publish a blessed, verified model into the serving folder, or say why not.

Inputs: `model` (Model), `blessing` (ModelBlessing), `examples` (test digits the staged copy must
answer), optional `baseline_model` (the latest pushed model, resolved just before this step).
Params: `PusherParams` with `serving_dir` resolved. Output: `pushed_model` with push.json.

The blessing is read only through `pipeline.formats.blessing.read_blessing`: a decision that is
missing, malformed or contradicted (by its marker file or the artifact's recorded properties)
pushes nothing. Not pushing because the model is not blessed, or because the served model
changed since the evaluation (compare-and-swap on the baseline id), is a normal result. A push
that was attempted and failed stops the run with exit status 1. A model whose files do not match
its digest raises ModelIntegrityError before anything else happens.

A push killed after its version appeared and before the runner recorded it is recovered, not
repeated: when the newest version's record names this model of this pipeline root and its files
have this model's digest, the pusher publishes nothing and records that version as pushed
("already serving (version N, recovered from an interrupted push)"). This is checked before the
blessing: it records what serves, a decision an earlier run already made and carried out.
"""

from __future__ import annotations

import os
import time

from components.pusher.params import PusherParams
from components.pusher.publish import interrupted_push, publish
from components.pusher.serving_check import make_verify_fn, read_examples
from pipeline.core.errors import ConfigError, PushError
from pipeline.core.step import StepContext, StepOutcome
from pipeline.formats import blessing as blessing_format
from pipeline.formats import model as model_format
from pipeline.formats import pushed_model as pushed_format


def _gate_reasons(record: blessing_format.BlessingRecord, blessing_uri: str) -> str:
    """The evaluator's first reason, with how many more there are (listed in the NOT_BLESSED
    marker), so the run's last line says why."""
    reasons = record.reasons
    marker = os.path.join(blessing_uri, record.marker)
    return reasons[0] + (f" (+{len(reasons) - 1} more in {marker})" if len(reasons) > 1 else "")


def _blessing_refusal(ctx: StepContext) -> str | None:
    """Returns why the model must not be pushed, or None when the blessing allows it."""
    blessing = ctx.inputs["blessing"]
    model = ctx.inputs["model"]
    try:
        record = blessing_format.read_blessing(blessing.uri, recorded=blessing.properties)
    except blessing_format.BlessingError as e:
        return f"model not blessed ({e})"
    if not record.blessed:
        return f"model not blessed: {_gate_reasons(record, blessing.uri)}"
    if record.candidate_digest != model.properties.get(model_format.DIGEST):
        return f"blessing {blessing.uri} was given to a different model (digest mismatch); not pushing"
    evaluated_against = record.baseline_model_id
    current = ctx.inputs.get("baseline_model")
    current_id = current.id if current is not None else 0
    if evaluated_against != current_id:
        return (
            f"baseline changed since evaluation: blessed against model id {evaluated_against}, "
            f"latest pushed model is now id {current_id}; not pushing"
        )
    return None


def _outcome(
    ctx: StepContext, pushed: int, version: int, reason: str, stop_run: str | None = None
) -> StepOutcome:
    model = ctx.inputs["model"]
    serving_dir = ctx.params.serving_dir
    pushed_format.write_push_record(
        ctx.outputs["pushed_model"],
        {
            "pushed": pushed,
            "version": version,
            "model_id": model.id,
            "model_uri": model.uri,
            "model_digest": model.properties.get(model_format.DIGEST),
            "serving_dir": serving_dir,
            "reason": reason,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return StepOutcome(
        execution_properties={"pushed": pushed, "version": version, "reason": reason},
        output_properties={
            "pushed_model": {
                pushed_format.PUSHED: pushed,
                pushed_format.VERSION: version,
                pushed_format.MODEL_ID: model.id,
                pushed_format.SERVING_DIR: serving_dir,
            }
        },
        stop_run=stop_run,
        stop_exit_code=1,
    )


def run(ctx: StepContext[PusherParams]) -> StepOutcome:
    """Pushes ctx.inputs['model'] to ctx.params.serving_dir when its blessing allows it."""
    params = ctx.params
    if not params.serving_dir:
        raise ConfigError("config key pusher.serving_dir: empty; the factory must resolve it")
    model = ctx.inputs["model"]
    model_dir = model_format.verify_model(model, "model to push")
    digest = model.properties[model_format.DIGEST]
    serving = ctx.inputs.get("baseline_model")
    if serving is not None and serving.id == model.id:
        reason = f"model {serving.id} is already serving; nothing to push"
        ctx.log.info("not pushing: %s", reason)
        return _outcome(ctx, 0, 0, reason)
    try:
        recovered = interrupted_push(params.serving_dir, ctx.pipeline_root, model.id, model.uri, digest)
    except OSError as e:
        reason = f"serving dir {params.serving_dir}: cannot be read: {e.strerror or e}"
        ctx.log.error("push failed: %s", reason)
        return _outcome(ctx, 0, 0, reason, stop_run=f"push failed: {reason}")
    if recovered is not None:
        reason = f"already serving (version {recovered}, recovered from an interrupted push)"
        ctx.log.warning("not pushing again: model %d is %s", model.id, reason)
        return _outcome(ctx, 1, recovered, reason)
    refusal = _blessing_refusal(ctx)
    if refusal:
        ctx.log.info("not pushing: %s", refusal)
        return _outcome(ctx, 0, 0, refusal)

    records = read_examples(ctx.inputs["examples"].uri, params.verify_examples)
    record = pushed_format.version_record(ctx.pipeline_root, ctx.run_id, model.id, model.uri, digest)
    try:
        version = publish(model_dir, params.serving_dir, digest, make_verify_fn(records), record=record)
    except PushError as e:
        reason = str(e)
        ctx.log.error("push failed: %s", reason)
        return _outcome(ctx, 0, 0, reason, stop_run=f"push failed: {reason}")
    reason = f"published as version {version} in {params.serving_dir}"
    ctx.log.info("%s", reason)
    return _outcome(ctx, 1, version, reason)
