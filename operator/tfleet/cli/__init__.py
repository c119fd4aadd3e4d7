"""The `tfleet` command."""
