"""The HTTP/REST API and the Prometheus page.

Modelled on tensorflow_serving/model_servers/http_server.cc (dispatch: the monitoring
path first, then any path matching `(?i)/v1/.*`, else libevent's 404 page; status codes
from ToHTTPStatusCode; request_count for every dispatched request and request_latency
{API=<method>, entrypoint="REST"} for successful ones), http_rest_api_handler.cc and
http_rest_api_util.cc (the URL grammar, "Malformed request: ..." for anything else) and
util/json_tensor.cc (the `instances` and `inputs` request forms, their errors, and the
`predictions` / `outputs` responses). The server binds "::" (dual stack), falling back to
0.0.0.0, as net_http's evhttp server does, and runs requests on rest_api_num_threads.
"""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from e2e.standin import jsonout, protos
from e2e.standin.core import ServerCore
from e2e.standin.servable import WEDGE
from e2e.standin.status import OK, Status, StatusError, invalid_argument

DISPATCH_REGEX = re.compile(r"/v1/.*", re.IGNORECASE)
PREDICTION_REGEX = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
MODEL_STATUS_REGEX = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"

HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

_RAPIDJSON_ERRORS = [
    ("Expecting property name", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid control character", "Invalid encoding in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
]


class _ParsedModelInfo:
    def __init__(self) -> None:
        self.model_name = ""
        self.version: int | None = None
        self.label: str | None = None
        self.method = ""
        self.subresource = ""
        self.ok = False


def parse_model_info(http_method: str, path: str) -> _ParsedModelInfo:
    """ParseModelInfo; raises StatusError for names that do not decode or bad versions."""
    info = _ParsedModelInfo()
    version_text = label_text = ""
    m = None
    if http_method == "POST":
        m = PREDICTION_REGEX.fullmatch(path)
        if m:
            info.model_name, version_text, label_text, info.method = (g or "" for g in m.groups())
    elif http_method == "GET":
        m = MODEL_STATUS_REGEX.fullmatch(path)
        if m:
            info.model_name, version_text, label_text, info.subresource = (g or "" for g in m.groups())
    info.ok = m is not None
    if info.model_name:
        info.model_name = urllib.parse.unquote(info.model_name)
    if version_text:
        version = int(version_text)
        if version >= 2**63:
            raise StatusError(invalid_argument(f"Failed to convert version: {version_text} to numeric."))
        info.version = version
    if label_text:
        info.label = urllib.parse.unquote(label_text)
    return info


def _model_spec(info: _ParsedModelInfo) -> Any:
    spec = protos.ModelSpec(name=info.model_name)
    if info.version is not None:
        spec.version.value = info.version
    if info.label is not None:
        spec.version_label = info.label
    return spec


def debug_string(value: Any) -> str:
    """JsonValueToDebugString: PrettyWriter with single-line arrays, cut at 256 bytes."""
    w = jsonout.PrettyWriter()
    w.format = jsonout.SINGLE_LINE_ARRAY

    def emit(v: Any) -> None:
        if len(w.text()) >= 256:
            return
        if isinstance(v, dict):
            w.start_object()
            for k, item in v.items():
                w.key(k)
                emit(item)
            w.end_object()
        elif isinstance(v, list):
            w.start_array()
            for item in v:
                emit(item)
            w.end_array()
        elif v is None:
            w.raw("null")
        elif isinstance(v, bool):
            w.raw("true" if v else "false")
        elif isinstance(v, float):
            w.raw("NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity") if math.isinf(v) else repr(v))
        elif isinstance(v, int):
            w.raw(str(v))
        else:
            w.string(str(v))

    emit(value)
    return w.text()


def _json_type(v: Any) -> str:
    if v is None:
        return "Null"
    if v is True:
        return "True"
    if v is False:
        return "False"
    if isinstance(v, dict):
        return "Object"
    if isinstance(v, list):
        return "Array"
    if isinstance(v, str):
        return "String"
    return "Number"


def parse_json(body: str) -> dict[str, Any]:
    """ParseJson: rapidjson with NaN/Inf allowed and trailing text ignored."""
    if not body:
        raise StatusError(invalid_argument("JSON Parse error: The document is empty"))
    text = body.lstrip(" \t\r\n")
    if not text:
        raise StatusError(invalid_argument("JSON Parse error: The document is empty"))
    decoder = json.JSONDecoder(parse_constant=lambda c: {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[c])
    try:
        doc, _ = decoder.raw_decode(text)
    except json.JSONDecodeError as e:
        reason = next((r for p, r in _RAPIDJSON_ERRORS if e.msg.startswith(p)), None)
        if reason is None:
            reason = "Missing a comma or '}' after an object member." if "delimiter" in e.msg else "Invalid value."
        raise StatusError(
            invalid_argument(f"JSON Parse error: {reason} at offset: {e.pos + len(body) - len(text)}")
        ) from None
    if not isinstance(doc, dict):
        raise StatusError(invalid_argument(f"JSON Value: {debug_string(doc)} Is not object"))
    return doc


def _dense_shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], out: list[float]) -> None:
    """FillTensorProto for DT_FLOAT."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise StatusError(
                invalid_argument(
                    f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                    f"Expected at level: {rank}"
                )
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StatusError(
                invalid_argument(
                    f"JSON Value: {debug_string(value)} Type: {_json_type(value)} is not of expected type: float"
                )
            )
        out.append(float(value))
        return
    if level >= rank:
        raise StatusError(invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}"))
    if len(value) != shape[level]:
        raise StatusError(
            invalid_argument(
                f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}"
            )
        )
    for item in value:
        _fill(item, level + 1, shape, out)


def _check_dtype(info: Any) -> None:
    if info.dtype != protos.DT_FLOAT:
        raise StatusError(
            Status(
                "UNIMPLEMENTED",
                f"Conversion of JSON Value to type: {protos.data_type_string(info.dtype)}",
            )
        )


def _tensor(value: Any, info: Any) -> tuple[list[int], list[float]]:
    _check_dtype(info)
    shape = _dense_shape(value)
    values: list[float] = []
    _fill(value, 0, shape, values)
    return shape, values


def fill_predict_inputs(doc: dict[str, Any], inputs: dict[str, Any]) -> tuple[str, dict[str, tuple[list[int], list[float]]]]:
    """FillPredictRequestFromJson after the signature lookup: ("row"|"columnar", tensors)."""
    instances, columns = doc.get("instances"), doc.get("inputs")
    if "instances" in doc:
        if "inputs" in doc:
            raise StatusError(
                invalid_argument(
                    f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of 'inputs' or "
                    "'instances' keys to exist "
                )
            )
        if not isinstance(instances, list):
            raise StatusError(invalid_argument(f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array"))
        if not instances:
            raise StatusError(invalid_argument(f"JSON Value: {debug_string(doc)} No values in 'instances' array"))
        return "row", _from_instances(instances, inputs)
    if "inputs" in doc:
        return "columnar", _from_inputs(columns, inputs)
    raise StatusError(invalid_argument("Missing 'inputs' or 'instances' key"))


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _from_instances(instances: list[Any], inputs: dict[str, Any]) -> dict[str, tuple[list[int], list[float]]]:
    def is_object(v: Any) -> bool:
        return isinstance(v, dict) and not _is_b64(v)

    if not isinstance(instances[0], dict) and len(inputs) > 1:
        raise StatusError(
            invalid_argument(
                "instances is a plain list, but expecting list of objects as multiple input tensors required "
                "as per tensorinfo_map"
            )
        )
    objects = is_object(instances[0])
    rows: dict[str, list[tuple[list[int], list[float]]]] = {}

    def add(item: Any, name: str) -> None:
        if name not in inputs:
            raise StatusError(invalid_argument(f"JSON object: does not have named input: {name}"))
        shape, values = _tensor(item, inputs[name])
        seen = rows.setdefault(name, [])
        if seen and len(seen[0][1]) != len(values):
            raise StatusError(invalid_argument(f"Expecting tensor size: {len(seen[0][1])} but got: {len(values)}"))
        if seen and seen[0][0] != shape:
            raise StatusError(
                invalid_argument(
                    f"Expecting shape [{','.join(map(str, seen[0][0]))}] but got: [{','.join(map(str, shape))}]"
                )
            )
        seen.append((shape, values))

    for index, item in enumerate(instances):
        if objects:
            if not is_object(item):
                raise StatusError(invalid_argument(f"Expecting object but got list at item {index} of input list"))
            for name, value in item.items():
                try:
                    add(value, name)
                except StatusError as e:
                    raise StatusError(
                        invalid_argument(
                            f"Failed to process element: {index} key: {name} of 'instances' list. Error: {e.status}"
                        )
                    ) from None
            if set(item) != set(inputs):
                raise StatusError(
                    invalid_argument(
                        f"Failed to process element: {index} of 'instances' list. JSON object: {debug_string(item)} "
                        f"keys must be equal to: {','.join(sorted(inputs))}"
                    )
                )
        else:
            if is_object(item):
                raise StatusError(invalid_argument(f"Expecting value/list but got object at item {index} of input list"))
            try:
                add(item, sorted(inputs)[0])
            except StatusError as e:
                raise StatusError(
                    invalid_argument(f"Failed to process element: {index} of 'instances' list. Error: {e.status}")
                ) from None
    return {
        name: ([len(instances), *parts[0][0]], [v for _, values in parts for v in values])
        for name, parts in rows.items()
    }


def _from_inputs(value: Any, inputs: dict[str, Any]) -> dict[str, tuple[list[int], list[float]]]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(inputs) > 1:
            raise StatusError(
                invalid_argument(
                    "inputs is a plain value/list, but expecting an object as multiple input tensors required "
                    "as per tensorinfo_map"
                )
            )
        name = sorted(inputs)[0]
        return {name: _tensor(value, inputs[name])}
    out = {}
    for name in sorted(inputs):
        if name not in value:
            raise StatusError(invalid_argument(f"Missing named input: {name} in 'inputs' object."))
        out[name] = _tensor(value[name], inputs[name])
    return out


class RestApi:
    """HttpRestApiHandler: (status, body) for one request."""

    def __init__(self, core: ServerCore, timeout_ms: int) -> None:
        self.core = core
        self.timeout_ms = timeout_ms

    def process(self, http_method: str, path: str, body: str) -> tuple[Status, str, str, str]:
        """(status, body, model name, API method) as ProcessRequest leaves them."""
        status = invalid_argument(f"Malformed request: {http_method} {path}")
        try:
            info = parse_model_info(http_method, path)
        except StatusError as e:
            return e.status, "", "", ""
        output = ""
        try:
            if http_method == "POST" and info.ok:
                if info.method in ("classify", "regress"):
                    status = Status("UNIMPLEMENTED", f"The TF Serving stand-in does not serve {info.method} requests")
                elif info.method == "predict":
                    output = self._predict(info, body)
                    status = OK
            elif http_method == "GET" and info.ok:
                if not info.model_name:
                    raise StatusError(invalid_argument("Missing model name in request."))
                if info.subresource == "metadata":
                    output = self._metadata(info)
                else:
                    request = protos.GetModelStatusRequest()
                    request.model_spec.CopyFrom(_model_spec(info))
                    output = jsonout.proto_json(self.core.get_model_status(request))
                status = OK
        except StatusError as e:
            status, output = e.status, ""
        if not status.ok:
            output += jsonout.error(status.message)
        return status, output, info.model_name, info.method

    def _predict(self, info: _ParsedModelInfo, body: str) -> str:
        doc = parse_json(body)
        signature = doc.get("signature_name", "")
        if "signature_name" in doc and not isinstance(signature, str):
            raise StatusError(
                invalid_argument(
                    f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key must be a string value."
                )
            )
        spec = _model_spec(info)
        _, inputs = self.core.signature_inputs(spec, signature)
        if not inputs:
            raise StatusError(invalid_argument(f"Failed to get input map for signature: {signature or 'DEFAULT'}"))
        form, tensors = fill_predict_inputs(doc, inputs)
        request = protos.PredictRequest()
        request.model_spec.CopyFrom(spec)
        request.model_spec.signature_name = signature
        for name, (shape, values) in tensors.items():
            request.inputs[name].CopyFrom(protos.float_tensor(values, shape))
        response = self.core.predict(request, self.timeout_ms)
        outputs = {}
        for alias, tensor in response.outputs.items():
            shape = [d.size for d in tensor.tensor_shape.dim]
            values = protos.float_values(tensor, math.prod(shape)) or []
            outputs[alias] = (shape, values)
        if not outputs:
            raise StatusError(invalid_argument("Cannot convert empty tensor map to JSON"))
        try:
            return jsonout.predict_row(outputs) if form == "row" else jsonout.predict_columnar(outputs)
        except ValueError as e:
            raise StatusError(invalid_argument(str(e))) from None

    def _metadata(self, info: _ParsedModelInfo) -> str:
        request = protos.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.CopyFrom(_model_spec(info))
        response = self.core.get_model_metadata(request)
        sig_map = protos.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        return (
            "{\n"
            f'"model_spec":{jsonout.proto_json(response.model_spec, preserve_names=True)},\n'
            f'"metadata": {{"signature_def": {jsonout.proto_json(sig_map, preserve_names=True)}}}\n'
            "}\n"
        )


def not_found_page(code: int = 404, reason: str = "Not Found") -> str:
    """libevent's evhttp_send_error body."""
    return f"<HTML><HEAD>\n<TITLE>{code} {reason}</TITLE>\n</HEAD><BODY>\n<H1>{reason}</H1>\n</BODY></HTML>\n"


class _DualStackServer(ThreadingHTTPServer):
    daemon_threads = True
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _V4Server(ThreadingHTTPServer):
    daemon_threads = True


class HttpServer:
    def __init__(
        self,
        port: int,
        num_threads: int,
        api: RestApi,
        prometheus_path: str | None,
        page: Any,
        cors: bool,
    ) -> None:
        self.api = api
        slots = threading.BoundedSemaphore(max(num_threads, 1))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: str, content_type: str, extra: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
                data = body.encode()
                self.send_response_only(code)
                self.send_header("Content-Type", content_type)
                for k, v in extra:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
                WEDGE.hold()
                path = urllib.parse.urlsplit(self.path).path
                with slots:
                    if prometheus_path is not None and path == prometheus_path:
                        self._reply(200, page(), "text/plain")
                        return
                    if not DISPATCH_REGEX.fullmatch(path):
                        self._reply(404, not_found_page(), "text/html")
                        return
                    started = time.monotonic()
                    if self.command == "OPTIONS":
                        origin = self.headers.get("Origin", "")
                        status = OK if re.search(r"https?://", origin) else Status(
                            "FAILED_PRECONDITION", "Origin header is missing in CORS preflight"
                        )
                        output, model, method = ("" if status.ok else jsonout.error(status.message)), "", ""
                    else:
                        status, output, model, method = outer.api.process(self.command, path, body)
                    extra = [("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Methods", "POST, GET"),
                             ("Access-Control-Allow-Headers", "Content-Type")] if cors else []
                    if status.ok:
                        outer.api.core.record_latency(model, method, "REST", (time.monotonic() - started) * 1e6)
                    outer.api.core.record_request(model, status)
                    self._reply(HTTP_STATUS.get(status.code, 500), output, "application/json", extra)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle

        try:
            self._server: ThreadingHTTPServer = _DualStackServer(("::", port), Handler)
        except OSError:
            self._server = _V4Server(("0.0.0.0", port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="httprestserver", daemon=True)

    def start(self) -> None:
        self._thread.start()
