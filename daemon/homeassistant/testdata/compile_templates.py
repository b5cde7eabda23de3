"""Compiles templates with Jinja2, as Home Assistant's cv.template does when
it validates a discovery payload (Template.ensure_valid compiles the
template; a syntax error or an unknown filter or test rejects the whole
payload).

    compile_templates.py FILE    FILE: a JSON list of template strings

stdout gets a JSON list with, per template, "" when it compiles or the
error. Home Assistant compiles in a sandboxed environment of its own with
more filters and tests; the templates edgeinferd writes use only Jinja2's
built-ins."""
import json
import sys

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

env = ImmutableSandboxedEnvironment()
with open(sys.argv[1]) as f:
    templates = json.load(f)
errors = []
for t in templates:
    try:
        env.from_string(t)
        errors.append("")
    except TemplateError as e:
        errors.append(f"{type(e).__name__}: {e}")
print(json.dumps(errors))
