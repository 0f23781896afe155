"""Rules engine: rule schema, loading and validation, evaluation (see issue 3)."""
