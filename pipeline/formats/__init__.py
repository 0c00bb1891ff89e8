"""One home per artifact format, in the spirit of TFX's `standard_artifact_utils`.

Each module owns one artifact type: its MLMD type name, its files and folder names, its
property keys, and the functions that read and write it (`idx` is the raw data's format, `files`
the file readers they share). Steps and the application import these modules; these modules
import only the core, each other, and the libraries that parse the format.
"""
