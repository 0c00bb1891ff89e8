"""TrainerModule: the trainer's module file (`trainer.module_file`), an input read by content.

The artifact is the file itself, outside the pipeline root: its uri is the file's absolute
path and its property `content_digest` the sha256 of its bytes (`pipeline.core.external`), so
editing the module changes the trainer's cache key. The Model the trainer exports records
which module made it (`MODULE_FILE`, `MODULE_DIGEST` on the Model artifact, see
`pipeline.formats.model`).
"""

from __future__ import annotations

ARTIFACT_TYPE = "TrainerModule"
