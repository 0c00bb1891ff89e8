"""The pusher step: atomic, verified publishing into the TF Serving folder.

Modules: `publish` (the next version, through the serving folder's staged commit in
`pipeline.formats.pushed_model`), `serving_check` (the digits the staged model must answer),
`executor` (the step). Rolling back is an operation of the application (`pipeline.operations`).
"""
