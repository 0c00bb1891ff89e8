"""The pusher step: atomic, verified publishing into the TF Serving folder, and rollback.

Modules: `publish` (lock, staging copy, digest check, rename), `serving_check` (the staged
model must load and answer), `rollback` (re-publish an earlier version), `executor` (the step).
"""
