"""Stand-ins for the peers of tfleet's code in unit tests: a scripted TF Serving (tfserving) and a Prometheus HTTP API (prometheus)."""
