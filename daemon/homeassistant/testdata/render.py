"""Renders Home Assistant value templates with Jinja2, as Home Assistant's
MQTT entities do: each stdin line is {"template": ..., "payload": ...}; the
template sees the payload as value_json (and value); one JSON string per
line goes to stdout. Home Assistant renders in a sandboxed environment of
its own with more filters; the templates edgeinferd writes use only
Jinja2's built-ins."""
import json
import sys

from jinja2.sandbox import ImmutableSandboxedEnvironment

env = ImmutableSandboxedEnvironment()
for line in sys.stdin:
    req = json.loads(line)
    payload = req["payload"]
    out = env.from_string(req["template"]).render(value=payload, value_json=json.loads(payload))
    print(json.dumps(out.strip()))
