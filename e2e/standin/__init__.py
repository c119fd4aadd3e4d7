"""A stand-in for tensorflow_model_server, for pods that run as real processes.

`python -m e2e.standin <tensorflow_model_server flags>` behaves like TF Serving's model
server: the same flags and config files, the file-system version source and version
policies, load-before-ports start-up with load retries, the gRPC PredictionService and
ModelService and the REST API on the real wire formats and error texts, Prometheus
metrics, batching, no signal handlers. Models are directories with a `saved_model.pb` and
a card (`models.py`) saying what the "graph" computes and how it behaves. `image.py`
describes the `tensorflow/serving` image for the process runtime. See e2e/README.md.
"""
