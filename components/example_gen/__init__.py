"""ExampleGen: validates raw MNIST IDX files and writes them as split TFRecords of tf.Example.

Modules: `spans` (which span folders a run reads and their fingerprint), `encode` (features,
split assignment, Beam transforms), `download` (fetch and verify the files), `executor` (the
step's `run(ctx)`). The IDX files themselves are parsed by `pipeline.formats.idx`, the Examples
layout is `pipeline.formats.examples`.
"""
