"""The MLP baseline: 784 -> dense 512 ReLU -> dropout 0.2 -> 10 logits (one hidden layer).

Origin: the Keras comparisons of a CNN with a multilayer perceptron on MNIST this project grew
from (their MLP: flattened pixels, dense 512 with ReLU and dropout 0.2, softmax over 10), kept
to one hidden layer so it is the plain baseline a CNN has to beat. Compare it with
`run_local.py compare --config models/keras_cnn.toml --config models/mlp.toml`.

Entry point: `keras_model(params) -> tf.keras.Model` mapping float32 [N, 28, 28, 1] images in
[0, 1] to 10 logits; the trainer supplies augmentation, optimizer, schedule, precision and loss.
`params["hparams"]` may set `hidden_units` (default 512) and `dropout_rate` (default 0.2).
"""

import tensorflow as tf

DEFAULTS = {"hidden_units": 512, "dropout_rate": 0.2}


def settings(params) -> dict:
    """DEFAULTS overridden by params["hparams"]; ValueError naming an unknown or bad key."""
    hparams = dict(params.get("hparams") or {})
    unknown = sorted(set(hparams) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"models/mlp.py: unknown trainer.hparams {unknown} (known: {sorted(DEFAULTS)})")
    hp = {**DEFAULTS, **hparams}
    if not isinstance(hp["hidden_units"], int) or hp["hidden_units"] < 1:
        raise ValueError(
            f"models/mlp.py: trainer.hparams.hidden_units must be an integer >= 1, got {hp['hidden_units']!r}"
        )
    if not 0 <= hp["dropout_rate"] < 1:
        raise ValueError(
            f"models/mlp.py: trainer.hparams.dropout_rate must be in [0, 1), got {hp['dropout_rate']!r}"
        )
    return hp


def keras_model(params) -> tf.keras.Model:
    """The network for `params` (the trainer's params; only "hparams" is read here)."""
    hp = settings(params)
    return tf.keras.Sequential(
        [
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(hp["hidden_units"], activation="relu"),
            tf.keras.layers.Dropout(hp["dropout_rate"]),
            tf.keras.layers.Dense(10, dtype="float32"),
        ],
        name="mlp",
    )
