"""The metric gate's one I/O: an instant query against the Prometheus HTTP API (`/api/v1/query`)."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from tfleet.api.model import PrometheusAnalysis
from tfleet.engine.analysis import Result, evaluate, parse_response


def query_prometheus(check: PrometheusAnalysis, query: str, timeout: float = 3.0) -> Result:
    url = check.address.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            value = parse_response(response.read().decode())
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return Result(None, f"Prometheus at {check.address} did not answer: {getattr(exc, 'reason', exc)}",
                      source_failed=True)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return Result(None, f"Prometheus at {check.address} answered something unusable: {exc}", source_failed=True)
    return evaluate(check, value)
