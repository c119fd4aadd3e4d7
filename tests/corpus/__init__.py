"""A corpus of invalid InferenceService manifests, each annotated with the error it must produce."""
