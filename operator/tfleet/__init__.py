"""tfleet: a Kubernetes operator for fleets of TensorFlow Serving model servers."""

__version__ = "0.1.0"

GROUP = "tfleet.dev"
VERSION = "v1alpha1"
KIND = "InferenceService"
PLURAL = "inferenceservices"
API_VERSION = f"{GROUP}/{VERSION}"
