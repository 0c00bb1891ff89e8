"""The evaluator step: TFMA on the test split for candidate and baseline, then the blessing gate.

Modules: `integrity` (model digest check before any load), `tfma_setup` (EvalConfig),
`analysis` (the Beam pipeline), `metrics` (TFMA output -> plain per-slice dicts),
`blessing` (the pure gate logic), `executor` (the step).
"""
