"""The InferenceService API: its typed model, vocabulary, CRD and reference, defined once."""
