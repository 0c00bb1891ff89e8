"""The orchestration core: the step contract, the runner, artifacts and their commit protocol,
ML Metadata, fingerprints, the lock and errors.

It knows no step by name and imports nothing from `components/`, the command line or the
report: a pipeline is a list of `StepSpec`s handed to `run_pipeline`.
"""
