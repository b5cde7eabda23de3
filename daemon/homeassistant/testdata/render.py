"""Renders Home Assistant value templates with Jinja2, as Home Assistant's
MQTT entities do.

    render.py FILE    FILE: a JSON list of {"template": ..., "payload": ...}

Each template sees its payload as value_json (and value); stdout gets the
JSON list of the rendered strings, stripped. Home Assistant renders in a
sandboxed environment of its own with more filters; the templates
edgeinferd writes use only Jinja2's built-ins."""
import json
import sys

from jinja2.sandbox import ImmutableSandboxedEnvironment

env = ImmutableSandboxedEnvironment()
with open(sys.argv[1]) as f:
    reqs = json.load(f)
print(json.dumps([env.from_string(r["template"]).render(value=r["payload"], value_json=json.loads(r["payload"])).strip()
                  for r in reqs]))
