"""`{{ name }}` templates over app variables, as Spin's expressions use them.

One syntax for every place a manifest allows templates (component
`variables`, `allowed_outbound_hosts`): the name inside the braces is trimmed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

TEMPLATE = re.compile(r"\{\{(.*?)\}\}")


def names(template: str) -> list[str]:
    """Variable names a template references, in order."""
    return [m.group(1).strip() for m in TEMPLATE.finditer(template)]


def render(template: str, values: Mapping[str, str]) -> str:
    """Replace every `{{ name }}` with `values[name]` (KeyError if one is missing)."""
    return TEMPLATE.sub(lambda m: values[m.group(1).strip()], template)
