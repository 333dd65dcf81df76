"""schemathesis hooks of scripts/api-fuzz."""

import json
import os

import schemathesis

# The longest claim wait the fuzz run lets through, in milliseconds. A claim that finds
# nothing waits up to its waitMs (30 s at most), which would spend the run's time budget on
# waiting; any wait above this one is shortened to it, which keeps the value valid.
LONGEST_WAIT_MS = 50


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path != "/api/tasks/claim" or not isinstance(case.body, dict):
        return
    wait = case.body.get("waitMs")
    # A whole float (2000.0) is the same integer to the server.
    if isinstance(wait, (int, float)) and not isinstance(wait, bool) and LONGEST_WAIT_MS < wait <= 30000:
        case.body["waitMs"] = LONGEST_WAIT_MS


@schemathesis.hook
def before_load_schema(context, raw_schema):
    """A server that runs open (API_FUZZ_OPEN=1) asks for no token: the run reads the
    document without its security requirements, so that no check expects a 401 the server
    cannot give. With tokens every requirement stays and every auth check runs."""
    if os.environ.get("API_FUZZ_OPEN") != "1":
        return
    for item in raw_schema.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict):
                operation.pop("security", None)


@schemathesis.hook
def filter_query(context, query):
    """GET /api/tasks?payload= takes a JSON object (containment). Its schema says "a string
    that looks like an object", which cannot tell JSON from other text, so the generator's
    strings that are not JSON objects are left out rather than counted as valid requests the
    server refused; tests/api_errors.rs covers the refusals."""
    if context.operation is None or context.operation.path != "/api/tasks":
        return True
    if context.operation.method.upper() != "GET" or not isinstance(query, dict):
        return True
    raw = query.get("payload")
    if raw is None:
        return True
    try:
        return isinstance(json.loads(raw), dict)
    except (TypeError, ValueError):
        return False
