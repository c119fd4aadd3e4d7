"""Test helpers for the control plane's own suite: a small ``Widget`` CRD and polling.

The Widget exercises what the tfleet CRD relies on (status and scale subresources, schema
validation and defaults, a CEL rule, an immutable-field transition rule, printer columns)
without depending on the operator's generated CRD.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

WIDGET_GROUP = "test.localcluster.dev"
WIDGET_CRD_NAME = f"widgets.{WIDGET_GROUP}"

WIDGET_CRD_YAML = f"""\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {WIDGET_CRD_NAME}
spec:
  group: {WIDGET_GROUP}
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wdg]
    categories: [gadgets]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {{}}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    additionalPrinterColumns:
    - name: Size
      type: integer
      jsonPath: .spec.size
    - name: Color
      type: string
      jsonPath: .spec.color
    - name: Ready
      type: string
      jsonPath: .status.conditions[?(@.type=="Ready")].status
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        description: A Widget is a small test resource of the local control plane.
        properties:
          spec:
            type: object
            description: The desired state of the widget.
            required: [size]
            x-kubernetes-validations:
            - rule: self.size <= self.maxSize
              message: size must not exceed maxSize
            properties:
              size:
                type: integer
                minimum: 1
                description: How big the widget is.
              maxSize:
                type: integer
                default: 10
                description: The largest size allowed.
              color:
                type: string
                enum: [red, blue]
                default: red
                description: The colour of the widget.
              replicas:
                type: integer
                minimum: 0
                description: How many copies of the widget to keep.
              owner:
                type: string
                description: Who owns the widget; it cannot change once set.
                x-kubernetes-validations:
                - rule: self == oldSelf
                  message: owner is immutable
              parts:
                type: object
                description: Optional parts of the widget.
                properties:
                  handle:
                    type: boolean
                    description: Whether the widget has a handle.
          status:
            type: object
            properties:
              replicas:
                type: integer
              selector:
                type: string
              observedGeneration:
                type: integer
              conditions:
                type: array
                items:
                  type: object
                  required: [type, status]
                  properties:
                    type: {{type: string}}
                    status: {{type: string}}
                    reason: {{type: string}}
                    message: {{type: string}}
"""

WIDGET_CRD: dict[str, Any] = yaml.safe_load(WIDGET_CRD_YAML)


def widget(name: str, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    spec.setdefault("size", 1)
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": f"{WIDGET_GROUP}/v1", "kind": "Widget", "metadata": meta, "spec": spec}


def eventually(probe: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition not met") -> T:
    """Poll until ``probe`` returns something truthy; returns it (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{message} within {timeout}s (last: {last!r})")
