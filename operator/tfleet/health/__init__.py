"""Model-aware gRPC health for TF Serving pods.

- `bridge`: the health bridge sidecar (`tfleet health-bridge`);
- `probe`: the one-shot check (`tfleet probe`);
- `podspec`: pure builders of the pod spec pieces (sidecar, probes, preStop);
- `status`: the pure reading of TF Serving's model status, shared by all of them and by the
  operator (`parse_status_json`);
- `protos`: TF-free protobuf definitions of ModelService.GetModelStatus.
"""

from tfleet.health.verdicts import (
    BridgeStatus,
    ModelHealth,
    StatusFormatError,
    VersionStatus,
    parse_bridge_status,
    parse_status_json,
)

__all__ = [
    "BridgeStatus",
    "ModelHealth",
    "StatusFormatError",
    "VersionStatus",
    "parse_bridge_status",
    "parse_status_json",
]
