"""SchemaGen: publishes the curated schema and reports how it differs from an inferred one."""
