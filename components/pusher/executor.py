"""The pusher step: publish a blessed, verified model into the serving folder, or say why not.

Inputs: `model` (Model), `blessing` (ModelBlessing), `examples` (test digits the staged copy must
answer), optional `baseline_model` (the latest pushed model, resolved just before this step).
Params: PusherConfig with `serving_dir` resolved. Output: `pushed_model` with push.json.

Not pushing because the model is not blessed, or because the served model changed since the
evaluation (compare-and-swap on the baseline id), is a normal result. A push that was attempted
and failed stops the run with exit status 1. A model whose files do not match its digest raises
ModelIntegrityError before anything else happens.
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional

from components.evaluator.layout import BLESSED_FILE, DECISION_FILE, NOT_BLESSED_FILE
from components.pusher.publish import publish
from components.pusher.serving_check import make_verify_fn, read_examples
from pipeline.errors import ConfigError, PushError
from pipeline.model_integrity import verify_model
from pipeline.step import StepContext, StepOutcome

PUSH_FILE = "push.json"


def _gate_reasons(not_blessed_path: str) -> str:
    """The evaluator's first reason from its NOT_BLESSED file, with how many more there are, so
    the run's last line says why; the file's path when it cannot be read."""
    try:
        with open(not_blessed_path, encoding="utf-8", errors="replace") as f:
            reasons = [line.strip() for line in f if line.strip()]
    except OSError as e:
        return f"{not_blessed_path} ({e.strerror})"
    if not reasons:
        return f"see {not_blessed_path}"
    more = f" (+{len(reasons) - 1} more in {not_blessed_path})" if len(reasons) > 1 else ""
    return reasons[0] + more


def _blessing_refusal(ctx: StepContext) -> Optional[str]:
    """Returns why the model must not be pushed, or None when the blessing allows it."""
    blessing = ctx.inputs["blessing"]
    model = ctx.inputs["model"]
    not_blessed = os.path.join(blessing.uri, NOT_BLESSED_FILE)
    if os.path.exists(not_blessed):
        return f"model not blessed: {_gate_reasons(not_blessed)}"
    if not os.path.isfile(os.path.join(blessing.uri, BLESSED_FILE)):
        return f"model not blessed (no {BLESSED_FILE} marker in {blessing.uri})"
    if blessing.properties.get("blessed") != 1:
        return f"model not blessed (blessing artifact {blessing.id} has blessed={blessing.properties.get('blessed')!r})"
    try:
        with open(os.path.join(blessing.uri, DECISION_FILE)) as f:
            decision = json.load(f)
        blessed_digest = decision["candidate_model"]["digest"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"blessing {blessing.uri}: unreadable {DECISION_FILE} ({type(e).__name__}); not pushing"
    if blessed_digest != model.properties.get("digest"):
        return f"blessing {blessing.uri} was given to a different model (digest mismatch); not pushing"
    evaluated_against = blessing.properties.get("baseline_model_id")
    current = ctx.inputs.get("baseline_model")
    current_id = current.id if current is not None else 0
    if evaluated_against != current_id:
        return (f"baseline changed since evaluation: blessed against model id {evaluated_against}, "
                f"latest pushed model is now id {current_id}; not pushing")
    return None


def _outcome(ctx: StepContext, pushed: int, version: int, reason: str,
             stop_run: Optional[str] = None) -> StepOutcome:
    model = ctx.inputs["model"]
    serving_dir = ctx.params.serving_dir
    record = {"pushed": pushed, "version": version, "model_id": model.id, "model_uri": model.uri,
              "model_digest": model.properties.get("digest"), "serving_dir": serving_dir,
              "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(os.path.join(ctx.outputs["pushed_model"], PUSH_FILE), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    return StepOutcome(
        execution_properties={"pushed": pushed, "version": version, "reason": reason},
        output_properties={"pushed_model": {"pushed": pushed, "version": version,
                                            "model_id": model.id, "serving_dir": serving_dir}},
        stop_run=stop_run,
        stop_exit_code=1,
    )


def run(ctx: StepContext) -> StepOutcome:
    """Pushes ctx.inputs['model'] to ctx.params.serving_dir when its blessing allows it."""
    params = ctx.params
    if not params.serving_dir:
        raise ConfigError("config key pusher.serving_dir: empty; the factory must resolve it")
    model_dir = verify_model(ctx.inputs["model"], "model to push")
    serving = ctx.inputs.get("baseline_model")
    if serving is not None and serving.id == ctx.inputs["model"].id:
        reason = f"model {serving.id} is already serving; nothing to push"
        ctx.log.info("not pushing: %s", reason)
        return _outcome(ctx, 0, 0, reason)
    refusal = _blessing_refusal(ctx)
    if refusal:
        ctx.log.info("not pushing: %s", refusal)
        return _outcome(ctx, 0, 0, refusal)

    records = read_examples(ctx.inputs["examples"].uri, params.verify_examples)
    try:
        version = publish(model_dir, params.serving_dir, ctx.inputs["model"].properties["digest"],
                          make_verify_fn(records))
    except PushError as e:
        reason = str(e)
        ctx.log.error("push failed: %s", reason)
        return _outcome(ctx, 0, 0, reason, stop_run=f"push failed: {reason}")
    reason = f"published as version {version} in {params.serving_dir}"
    ctx.log.info("%s", reason)
    return _outcome(ctx, 1, version, reason)
