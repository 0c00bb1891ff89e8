"""The evaluator step: verify models, run TFMA, apply the blessing gate, write the decision.

Inputs: `examples` (Examples; the test split is evaluated), `model` (the candidate Model),
optional `baseline_model` (the latest pushed Model). Params: `EvaluatorParams`.
Outputs: `evaluation` (TFMA output, plus outcomes.npz, mistakes.json and confusion_matrix.json:
see pipeline.formats.evaluation), `blessing` (BLESSED or NOT_BLESSED, plus decision.json).
Raises ModelIntegrityError before any model is loaded when a digest does not match, and
InputDataError when the test split is missing or empty. Not blessing is a normal result.
"""

from __future__ import annotations

import math

from components.evaluator import blessing, paired_stats, tfma_setup
from components.evaluator import metrics as metrics_lib
from components.evaluator.analysis import run_analysis
from components.evaluator.params import EvaluatorParams
from pipeline.core.errors import InputDataError, PipelineError
from pipeline.core.step import StepContext, StepOutcome
from pipeline.formats import evaluation as evaluation_format
from pipeline.formats import examples as examples_format
from pipeline.formats.blessing import BlessingRecord, recorded_properties, write_blessing
from pipeline.formats.model import DIGEST, verify_model

REQUIRED_SLICES = tuple(f"{blessing.LABEL_SLICE_PREFIX}{k}" for k in range(tfma_setup.NUM_CLASSES))


def _model_facts(artifact) -> dict:
    return {"id": artifact.id, "uri": artifact.uri, "digest": artifact.properties.get(DIGEST)}


def _paired_tables(evaluation_uri: str):
    """Slice name -> PairedTable of candidate vs baseline from this evaluation's outcomes.

    None when the outcomes hold no baseline column: the gate then refuses (fail closed).
    """
    outcomes = evaluation_format.read_outcomes(evaluation_uri)
    if evaluation_format.BASELINE_CORRECT not in outcomes:
        return None
    features = {
        name: outcomes[name] for name in (evaluation_format.LABEL, evaluation_format.INK_DENSITY_BUCKET)
    }
    return paired_stats.tables_by_slice(
        outcomes[evaluation_format.CANDIDATE_CORRECT],
        outcomes[evaluation_format.BASELINE_CORRECT],
        features,
        required={evaluation_format.LABEL: range(tfma_setup.NUM_CLASSES)},
    )


def run(ctx: StepContext[EvaluatorParams]) -> StepOutcome:
    """Evaluates ctx.inputs['model'] (and 'baseline_model') and writes the blessing."""
    params = ctx.params
    candidate = ctx.inputs["model"]
    baseline = ctx.inputs.get("baseline_model")
    # Our promise: only models whose files match their recorded digest are ever loaded.
    candidate_path = verify_model(candidate, "candidate model")
    baseline_path = verify_model(baseline, "baseline model") if baseline is not None else None
    pattern = examples_format.split_pattern(ctx.inputs["examples"].uri, "test")
    ctx.log.info(
        "evaluating candidate %s%s on %s (max_examples=%s)",
        candidate.uri,
        f" against baseline {baseline.uri}" if baseline is not None else " (no baseline: first run)",
        pattern,
        params.max_examples,
    )

    analysis = run_analysis(
        pattern,
        candidate_path,
        baseline_path,
        ctx.outputs["evaluation"],
        params.max_examples,
        ctx.beam_pipeline_options(),
    )
    by_model = metrics_lib.merge(
        metrics_lib.read_metrics(ctx.outputs["evaluation"], unnamed_model=tfma_setup.CANDIDATE),
        metrics_lib.per_class_from_confusion(analysis.confusion),
    )  # TFMA's plots, read once by run_analysis
    candidate_metrics = by_model.get(tfma_setup.CANDIDATE, {})
    baseline_metrics = by_model.get(tfma_setup.BASELINE, {}) if baseline is not None else None
    # TFMA's own count is authoritative; the Beam counters cross-check it where the runner has them.
    count = candidate_metrics.get(blessing.OVERALL, {}).get(blessing.EXAMPLE_COUNT)
    evaluated = int(count) if isinstance(count, float) and math.isfinite(count) else 0
    if evaluated == 0:
        raise InputDataError(f"{pattern}: no test examples were evaluated")
    if analysis.examples_read:  # 0: the runner reports no counters
        examples_format.check_recorded_counts(ctx.inputs["examples"], {"test": analysis.examples_read})
    if analysis.examples_selected and analysis.examples_selected != evaluated:
        raise PipelineError(
            f"TFMA output {ctx.outputs['evaluation']}: overall example_count {evaluated} "
            f"!= {analysis.examples_selected} examples fed to it"
        )

    paired = _paired_tables(ctx.outputs["evaluation"]) if baseline is not None else None
    decision = blessing.decide(candidate_metrics, baseline_metrics, params, REQUIRED_SLICES, paired)
    examples_per_second = evaluated / analysis.seconds if analysis.seconds > 0 else 0.0
    thresholds = {name: getattr(params, name) for name in blessing.THRESHOLD_NAMES}
    record = BlessingRecord(
        **decision.to_dict(),
        thresholds=thresholds,
        candidate_model=_model_facts(candidate),
        baseline_model=_model_facts(baseline) if baseline is not None else None,
        examples={
            "uri": ctx.inputs["examples"].uri,
            "split": "test",
            "read": analysis.examples_read,
            "evaluated": evaluated,
        },
        metrics=metrics_lib.json_ready(
            {
                "candidate": candidate_metrics,
                "baseline": baseline_metrics,
                "diff": by_model.get(tfma_setup.CANDIDATE + metrics_lib.DIFF_SUFFIX),
            }
        ),
    )
    write_blessing(ctx.outputs["blessing"], record)

    blessed = 1 if decision.blessed else 0
    if decision.blessed:
        ctx.log.info("candidate BLESSED (%d checks passed)", len(decision.checks))
    else:
        ctx.log.warning("candidate NOT blessed: %s", "; ".join(decision.reasons))
    return StepOutcome(
        execution_properties={
            "blessed": blessed,
            "reasons": list(decision.reasons),
            "metrics": metrics_lib.json_ready(
                {
                    "candidate": metrics_lib.summary(candidate_metrics),
                    "baseline": metrics_lib.summary(baseline_metrics)
                    if baseline_metrics is not None
                    else None,
                }
            ),
            "checks": decision.to_dict()["checks"],
            "policy": decision.policy,
            "alpha": decision.alpha,
            "margin": decision.margin,
            "comparisons": decision.comparisons,
            "examples_evaluated": evaluated,
            "beam_runner": ctx.beam_runner(),
            "examples_per_second": round(examples_per_second, 2),
            "tfma_seconds": round(analysis.seconds, 2),
        },
        output_properties={"blessing": recorded_properties(record)},
    )
