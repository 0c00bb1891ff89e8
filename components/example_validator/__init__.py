"""ExampleValidator: the data gate (schema anomalies per split, label and pixel drift between spans)."""
