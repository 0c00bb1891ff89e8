"""How TFMA loads the evaluated SavedModels: with signatures that do not pay for a discarded error.

Calling a loaded serving signature, TensorFlow 2.15 first tries to bind the arguments to its
structured signature and, when that fails, calls the flat signature. For TFMA's call (the batch
of serialized examples as one positional argument) the binding always fails, and for the
Estimator's TF1 signatures any call does (their structured signature has no parameters). The
TypeError raised and discarded on the way formats every argument, and numpy prints an array of
up to 1,000 elements in full: for a batch of 1,000 serialized digits, 3 MB of text and 0.18 s
of CPU, about as much as the forward pass (cProfile of the evaluator on 10,000 test digits:
1.8 s in numpy's array printing, 2.5 s in the model). `SummarizingSignatures` hands TFMA the
model's own signatures, each called with numpy printing arrays as summaries, so the discarded
message costs microseconds. The computation is the same call of the same function.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma

# Arrays above this many elements print as a summary (numpy's default is 1,000).
PRINT_THRESHOLD = 16


class _SummarizingCall:
    """A signature (ConcreteFunction) called with numpy's print threshold at PRINT_THRESHOLD;
    TFMA reads `structured_input_signature` and `structured_outputs` as it would the
    signature's own."""

    def __init__(self, signature):
        self._signature = signature
        self.structured_input_signature = signature.structured_input_signature
        self.structured_outputs = signature.structured_outputs

    def __call__(self, *args, **kwargs):
        with np.printoptions(threshold=PRINT_THRESHOLD):
            return self._signature(*args, **kwargs)


class SummarizingSignatures:
    """A loaded SavedModel as TFMA's PredictionsExtractor uses it: `signatures`, each a
    `_SummarizingCall` of the model's own. Holds the loaded object (its variables) alive."""

    def __init__(self, loaded):
        self._loaded = loaded
        self.signatures = {name: _SummarizingCall(fn) for name, fn in loaded.signatures.items()}


def load_summarizing_signatures(saved_model_path: str, tags: tuple) -> SummarizingSignatures:
    """Loads the SavedModel at `saved_model_path` (with `tags`) as a SummarizingSignatures."""
    return SummarizingSignatures(tf.saved_model.load(saved_model_path, tags=list(tags)))


def eval_shared_model(saved_model_path: str, eval_config, model_name: str):
    """TFMA's EvalSharedModel of the serving SavedModel at `saved_model_path`, named
    `model_name` in `eval_config`, loaded by `load_summarizing_signatures`."""
    tags = (tf.saved_model.SERVING,)
    loader = tfma.types.ModelLoader(
        construct_fn=functools.partial(load_summarizing_signatures, saved_model_path, tags), tags=list(tags)
    )
    return tfma.default_eval_shared_model(
        saved_model_path, eval_config=eval_config, model_name=model_name, custom_model_loader=loader
    )
