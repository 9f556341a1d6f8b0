"""Jinja2 for the report: templates in ``templates/report/``, HTML autoescaping, StrictUndefined.

Every value reaches the page escaped, except MathML the printer built (`markupsafe.Markup`).
The style sheet and script are included verbatim, so the page needs nothing but itself.
"""
from __future__ import annotations

from functools import lru_cache

import jinja2

from ..backends.templating import template_dir


def _fixed(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The report's Jinja2 environment (built once)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir() / "report")),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fixed"] = _fixed
    env.filters["ops"] = lambda ops: " ".join(str(i) for i in ops)
    return env


def render(name: str, **context: object) -> str:
    """Render one of the report's templates."""
    return environment().get_template(name).render(**context)
