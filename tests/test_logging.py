"""Structured logs: the request id (from X-Request-ID or made up, echoed back), carried into
a real Celery task; the `prediction` event and the fields it leaves out (`log: false`)."""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from config.logs import REQUEST_ID_RE, logging_config
from gateway.definitions import DefinitionError, predictors_load
from gateway.models import Predictor, WebhookDelivery
from gateway.observability import loggable_input
from gateway.schema import definition_validate
from gateway.services import routing_update
from tests import factories


class _Lines(logging.Handler):
    """Every log record rendered by the production JSON formatter, parsed back."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        spec = logging_config(json=True)["formatters"]["structured"]
        factory = spec.pop("()")
        self.setFormatter(factory(**spec))
        self.events: list[dict] = []
        self._lock_events = threading.Lock()

    def emit(self, record):
        line = self.format(record)
        with self._lock_events:
            self.events.append(json.loads(line))

    def named(self, event: str) -> list[dict]:
        with self._lock_events:
            return [e for e in self.events if e.get("event") == event]


@pytest.fixture
def json_logs():
    handler = _Lines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _predict(api, body: dict, **headers):
    return api.post("/predict/loan-approval", body, format="json", **headers)


@pytest.mark.django_db
def test_request_id_is_taken_when_well_formed_and_made_up_otherwise(client_api, loan):
    given = _predict(client_api, {"input": factories.loan_input()}, HTTP_X_REQUEST_ID="req-2026.11.27:abc_1")
    assert given.status_code == 202
    assert given["X-Request-ID"] == "req-2026.11.27:abc_1"

    made = _predict(client_api, {"input": factories.loan_input()})
    assert REQUEST_ID_RE.match(made["X-Request-ID"]) and len(made["X-Request-ID"]) == 32

    for bad in ("has space", "x" * 200, '"quoted"', "-leading-dash", "semi;colon"):
        response = _predict(client_api, {"input": factories.loan_input()}, HTTP_X_REQUEST_ID=bad)
        assert response["X-Request-ID"] != bad and REQUEST_ID_RE.match(response["X-Request-ID"])

    # Errors carry it too (a 404 here; the middleware is first).
    missing = client_api.post("/predict/nope", {"input": {}}, format="json", HTTP_X_REQUEST_ID="req-404")
    assert missing.status_code == 404 and missing["X-Request-ID"] == "req-404"


@pytest.mark.django_db
def test_one_prediction_event_with_what_an_analyst_needs_and_no_log_false_fields(client_api, client_key, loan, json_logs):
    assert loan.input_schema["note"]["log"] is False  # shipped that way: free text may hold personal data
    routing_update(predictor=loan, changes={"mode": "rule"})
    data = factories.loan_input(note="my name is Jane Doe, call me on 07700 900123")
    response = _predict(client_api, {"input": data}, HTTP_X_REQUEST_ID="req-pred-1", HTTP_IDEMPOTENCY_KEY="k-1")
    assert response.status_code == 200
    body = response.json()

    events = json_logs.named("prediction")
    assert len(events) == 1
    event = events[0]
    assert event["request_id"] == "req-pred-1"
    assert event["prediction_id"] == body["id"]
    assert event["predictor"] == "loan-approval"
    assert event["route_mode"] == "rule" and event["route_reason"] == "mode"
    assert event["source"] == "rule" and event["status"] == "answered"
    assert event["output"] == body["output"]
    assert event["model_version"] is None and event["confidence"] is None
    assert isinstance(event["latency_ms"], float) and event["latency_ms"] > 0
    assert event["client"] == client_key[0].name
    assert event["level"] == "info" and event["logger"] == "oz.predictions" and event["timestamp"]
    assert event["input"] == {k: v for k, v in data.items() if k != "note"}
    assert "Jane Doe" not in json.dumps(json_logs.events)

    # A replay of the same request is the same prediction: no second event.
    replay = _predict(client_api, {"input": data}, HTTP_IDEMPOTENCY_KEY="k-1")
    assert replay["Idempotent-Replayed"] == "true"
    assert len(json_logs.named("prediction")) == 1


@pytest.mark.django_db
def test_pending_prediction_event_names_the_humans(client_api, loan, json_logs):
    response = _predict(client_api, {"input": factories.loan_input()})
    assert response.status_code == 202
    (event,) = json_logs.named("prediction")
    assert event["status"] == "pending" and event["source"] == "human" and event["route_mode"] == "human"


def test_standard_library_log_lines_carry_the_bound_request_id(json_logs):
    from structlog.contextvars import bound_contextvars

    with bound_contextvars(request_id="req-stdlib"):
        logging.getLogger("gateway.something").warning("plain %s line", "stdlib")
    (event,) = json_logs.named("plain stdlib line")
    assert event["request_id"] == "req-stdlib" and event["level"] == "warning" and event["logger"] == "gateway.something"


def _python_under(module: str, code: str):
    """Run `code` in a new Python process under the settings `module` (and no DJANGO_ or
    OZ_LOG variables of this one); its completed process, output captured."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OZ_LOG"))}
    env.update(DJANGO_SETTINGS_MODULE=module, DJANGO_SECRET_KEY="x" * 50, DJANGO_ALLOWED_HOSTS="oz.example.com")
    return subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("module", ["config.settings.production", "config.settings.local"])
def test_a_logged_traceback_shows_no_local_variables(module):
    # Was: the console (make run) printed each frame's locals, a request's whole input among
    # them, fields marked `log: false` included.
    code = (
        "import django, logging; django.setup()\n"
        "def predict(note):\n"
        "    private = 'PII-' + note\n"
        "    return 1 / 0\n"
        "try:\n"
        "    predict('Jane-Doe')\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('gateway.services').exception('model failed')\n"
    )
    result = _python_under(module, code)
    assert result.returncode == 0, result.stderr
    assert "ZeroDivisionError" in result.stderr and "predict" in result.stderr  # the traceback is there
    assert "Jane-Doe" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("module", "renderer"), [("config.settings.production", "JSONRenderer"), ("config.settings.local", "ConsoleRenderer")]
)
def test_production_logs_json_and_local_logs_console(module, renderer):
    code = (
        "import django, logging; django.setup(); from django.conf import settings; "
        "print(type(settings.LOGGING['formatters']['structured']['processors'][-1]).__name__); "
        "import structlog; from structlog.contextvars import bind_contextvars; bind_contextvars(request_id='r-1'); "
        "structlog.get_logger('x').info('hello', n=1)"
    )
    result = _python_under(module, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == renderer
    line = result.stderr.strip().splitlines()[-1]
    if renderer == "JSONRenderer":
        event = json.loads(line)
        assert event["event"] == "hello" and event["request_id"] == "r-1" and event["n"] == 1
    else:
        assert "hello" in line and "request_id=r-1" in line


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        _Receiver.received.append(self.rfile.read(length))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.received = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.django_db(transaction=True)
def test_request_id_travels_into_the_celery_task_the_request_sent(celery_worker_thread, make_api, receiver, json_logs):
    loan = factories.loan_predictor()
    routing_update(predictor=loan, changes={"mode": "rule"})
    _, key = factories.api_client_with_key()
    api = make_api(f"Bearer {key}")

    response = _predict(api, {"input": factories.loan_input(), "callback_url": receiver}, HTTP_X_REQUEST_ID="req-into-task-7")
    assert response.status_code == 200
    prediction_id = response.json()["id"]

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if WebhookDelivery.objects.filter(prediction_id=prediction_id, status="delivered").exists():
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the webhook task did not deliver")
    assert _Receiver.received

    attempts = [e for e in json_logs.named("webhook attempt") if e.get("prediction_id") == prediction_id]
    assert attempts, json_logs.events
    (line,) = attempts
    # Logged by the worker thread, which never saw the request: the id came in the message.
    assert line["request_id"] == "req-into-task-7"
    assert line["task"] == "gateway.tasks.webhook_deliver" and line["task_id"]
    assert line["delivery_status"] == "delivered" and line["status_code"] == 200


# --- the `log` key of an input field ----------------------------------------------------------

def _definition(**note_spec) -> dict:
    return {
        "slug": "tiny",
        "input": {"amount": {"type": "number"}, "note": {"type": "text", **note_spec}},
        "output": {"type": "label", "labels": ["yes", "no"]},
    }


@pytest.mark.parametrize("value", [True, False])
def test_log_accepts_true_or_false(value):
    assert definition_validate(_definition(log=value)) == []


@pytest.mark.parametrize("value", ["no", 0, 1, None, [], {"x": 1}])
def test_log_refuses_anything_else_field_by_field(value):
    errors = definition_validate(_definition(log=value))
    assert [e.as_dict() for e in errors] == [{"field": "input.note.log", "message": "must be true or false"}]


def test_log_errors_name_each_field():
    data = _definition(log="off")
    data["input"]["amount"]["log"] = "yes"
    fields = sorted(e.field for e in definition_validate(data))
    assert fields == ["input.amount.log", "input.note.log"]


@pytest.mark.django_db
def test_loader_refuses_a_bad_log_value_and_a_log_change_is_not_a_new_schema_version(tmp_path, loan):
    bad = tmp_path / "bad.yaml"
    bad.write_text("slug: bad\ninput:\n  note: {type: text, log: maybe}\noutput: {type: label, labels: [a, b]}\n")
    with pytest.raises(DefinitionError) as caught:
        predictors_load(bad)
    assert [e.field for e in caught.value.errors] == ["input.note.log"]

    # Logging a field or not changes nothing a model learned: same schema version.
    version = loan.schema_version
    text = (factories.DEMO_PREDICTORS / "loan-approval.yaml").read_text().replace("log: false", "log: true")
    changed = tmp_path / "loan-approval.yaml"
    changed.write_text(text)
    predictors_load(changed)
    reloaded = Predictor.objects.get(slug="loan-approval")
    assert reloaded.input_schema["note"]["log"] is True
    assert reloaded.schema_version == version


def test_loggable_input_defaults_to_logging_a_field():
    schema = {"a": {"type": "number"}, "b": {"type": "text", "log": False}, "c": {"type": "text", "log": True}}
    assert loggable_input(schema, {"a": 1, "b": "secret", "c": "fine"}) == {"a": 1, "c": "fine"}


def test_an_event_orjson_cannot_write_is_still_one_json_line(json_logs):
    # An integer beyond 64 bits (a text field's count, a rule's operand...): its event must not be lost.
    import structlog

    structlog.get_logger("oz.predictions").info("prediction", input={"count": 2**80, "ratio": 0.5}, note="naïve ✓")
    (event,) = json_logs.named("prediction")
    assert event["input"] == {"count": 2**80, "ratio": 0.5} and event["note"] == "naïve ✓"
