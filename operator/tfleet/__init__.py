"""tfleet: a Kubernetes operator for fleets of TensorFlow Serving model servers.

The package has layers, each importing only from the ones below it (`make lint` checks):

- `api`: the InferenceService API, its vocabulary and its CRD, defined once;
- `desired`: the children an InferenceService asks for (pure);
- `engine`: the decisions, rollout, status and plans (pure: no clock, no I/O);
- `runtime`: everything that talks to the world (the API server, pods, Prometheus);
- `cli`: the `tfleet` command.

`health` is the health bridge, a program of its own that runs beside TF Serving in every
serving pod; it imports nothing else of tfleet.
"""

__version__ = "0.1.0"
