"""The children an InferenceService asks for, as pure functions of its parsed model."""
