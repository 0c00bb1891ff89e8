"""A Keras Sequential CNN: 3 x (conv 3x3, same padding, ReLU, max-pool 2x2) with 32, 64 and 128
filters, dense 256 ReLU, dropout 0.4, 10 logits.

Origin: the Keras Sequential CNN tutorials for MNIST this project grew from (trained there with
Adam at 0.001, batch 100; models/keras_cnn.toml sets the same). Here the trainer supplies the
rest: images arrive scaled to [0, 1] as [N, 28, 28, 1], augmented in training; the optimizer,
its schedule, the precision policy and the loss are the `[trainer]` settings
(components/trainer/keras_model_fn.py).

Entry point: `keras_model(params) -> tf.keras.Model` mapping float32 [N, 28, 28, 1] to 10 logits
(no softmax: the trainer adds it). `params["hparams"]` (the `[trainer.hparams]` table) may set:
- `filters`: list of conv filter counts, one conv + pool block each (default [32, 64, 128]);
- `dense_units` (default 256) and `dropout_rate` (default 0.4).
"""

import tensorflow as tf

DEFAULTS = {"filters": [32, 64, 128], "dense_units": 256, "dropout_rate": 0.4}


def settings(params) -> dict:
    """DEFAULTS overridden by params["hparams"]; ValueError naming an unknown or bad key."""
    hparams = dict(params.get("hparams") or {})
    unknown = sorted(set(hparams) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"models/keras_cnn.py: unknown trainer.hparams {unknown} (known: {sorted(DEFAULTS)})"
        )
    hp = {**DEFAULTS, **hparams}
    if (
        not hp["filters"]
        or not all(isinstance(f, int) and f >= 1 for f in hp["filters"])
        or len(hp["filters"]) > 4
    ):
        raise ValueError(
            f"models/keras_cnn.py: trainer.hparams.filters must be 1 to 4 integers >= 1, got {hp['filters']!r}"
        )
    if not isinstance(hp["dense_units"], int) or hp["dense_units"] < 1:
        raise ValueError(
            f"models/keras_cnn.py: trainer.hparams.dense_units must be an integer >= 1, got {hp['dense_units']!r}"
        )
    if not 0 <= hp["dropout_rate"] < 1:
        raise ValueError(
            f"models/keras_cnn.py: trainer.hparams.dropout_rate must be in [0, 1), got {hp['dropout_rate']!r}"
        )
    return hp


def keras_model(params) -> tf.keras.Model:
    """The network for `params` (the trainer's params; only "hparams" is read here)."""
    hp = settings(params)
    layers = []
    for filters in hp["filters"]:
        layers += [
            tf.keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
            tf.keras.layers.MaxPool2D(2),
        ]
    layers += [
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(hp["dense_units"], activation="relu"),
        tf.keras.layers.Dropout(hp["dropout_rate"]),
        # float32 logits under a mixed policy: the softmax and loss keep full precision.
        tf.keras.layers.Dense(10, dtype="float32"),
    ]
    return tf.keras.Sequential(layers, name="keras_cnn")
