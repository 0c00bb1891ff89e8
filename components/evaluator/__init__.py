"""The evaluator step: TFMA on the test split for candidate and baseline, then the blessing gate.

Modules: `tfma_setup` (EvalConfig), `analysis` (the Beam pipeline), `metrics` (TFMA output ->
plain per-slice dicts), `paired_stats` (paired comparisons of candidate and baseline),
`blessing` (the pure gate logic), `executor` (the step). Models are verified before any load by
`pipeline.formats.model.verify_model`; the decision is written as a
`pipeline.formats.blessing.BlessingRecord`.
"""
