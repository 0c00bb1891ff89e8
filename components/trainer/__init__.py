"""The Trainer step: trains the network of the module file `trainer.module_file` names with
tf.estimator and exports the checkpoint chosen on the eval split.

Modules:
- `module_contract`: the module file's entry points, checked from its source (no TensorFlow).
- `user_module`: loading the module file (by its verified digest) into an Estimator model_fn.
- `estimator_contract`: what a module's `model_fn` must return, checked and completed.
- `keras_model_fn`: a module's `keras_model(params)` as a model_fn with the trainer's settings.
- `model`: the classic CNN's `model_fn` (the default module, models/classic_cnn.py) and the
  training helpers the Keras wrapper shares (scaling, augmentation, schedule, optimizer).
- `inputs`: `input_fn`s reading an Examples artifact's gzip TFRecord splits.
- `hooks`: training-loop hooks (non-finite loss guard, progress and throughput).
- `export`: the serving input receiver, signature naming and the exported-model check.
- `warm_start`: verifying a base model and building the warm-start settings from it.
- `result`: `TrainingResult`, what a training run hands back, in one process or on a cluster.
- `cluster`: launching, supervising and ending a local TensorFlow cluster (`trainer.workers`).
- `cluster_task`: one cluster task's entry point, `python -m components.trainer.cluster_task`.
- `executor`: `run(ctx)`, the step itself.
"""
