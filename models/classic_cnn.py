"""The classic CNN: the pipeline's default network (`trainer.module_file` unset).

Origin: the TensorFlow Estimator tutorial "Build a Convolutional Neural Network using
Estimators" (`cnn_model_fn`, tensorflow/models official/r1/mnist): conv 5x5 32, max-pool 2x2,
conv 5x5 64, max-pool 2x2, dense 1024, dropout 0.4, 10 logits, trained here with the
pipeline's augmentation, label smoothing, learning-rate schedule and precision, and served
with its test-time augmentation.

Entry point: `model_fn(features, labels, mode, params)`, the Estimator contract. The network
is the trainer's own `components.trainer.model.model_fn`, not a copy of it: the default run
trains exactly the network it always trained, its unit tests (tests/test_model_fn.py) test
this very code, and that file is part of the trainer's code fingerprint, so changing it
retrains like changing this one. Its sizes are `[trainer]` settings: conv1_filters,
conv2_filters, kernel_size, dense_units, dropout_rate (see the README's Configuration).
A module of your own would define `model_fn` here in full; models/keras_cnn.py and
models/mlp.py show the other entry point, `keras_model(params)`.
"""

from components.trainer.model import model_fn

__all__ = ["model_fn"]
