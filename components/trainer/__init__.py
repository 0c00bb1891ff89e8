"""The Trainer step: trains the MNIST CNN with tf.estimator and exports the best model.

Modules:
- `model`: `model_fn`, the network and its TRAIN / EVAL / PREDICT contract.
- `inputs`: `input_fn`s reading an Examples artifact's gzip TFRecord splits.
- `hooks`: training-loop hooks (non-finite loss guard, progress and throughput).
- `export`: the serving input receiver, signature naming and the exported-model check.
- `warm_start`: verifying a base model and building the warm-start settings from it.
- `executor`: `run(ctx)`, the step itself.
"""
