"""Pipeline configs the end-to-end tests share: a few-hundred-digit, few-step training whose
gate accepts any trained model, so the tests exercise the machinery, not the model."""

SMALL_LENIENT = """
[trainer]
train_steps = {train_steps}
batch_size = 50
eval_every_steps = 60
early_stopping_evals = 0

[evaluator]
accuracy_floor = 0.30
promotion_policy = "non_inferiority"
non_inferiority_margin = 1.0
slice_accuracy_floor = 0.0
slice_max_regression = 1.0
"""


def small_lenient(train_steps: int) -> str:
    """SMALL_LENIENT with `train_steps` training steps."""
    return SMALL_LENIENT.format(train_steps=train_steps)
