"""Safe Handlebars templates: a strict grammar in front of pybars, cached compiles, text output."""

from app.templates.engine import TemplateEngine, arender_deep, render_deep
from app.templates.grammar import TemplateError, assert_valid_template, check_template

__all__ = [
    "TemplateEngine",
    "TemplateError",
    "arender_deep",
    "assert_valid_template",
    "check_template",
    "render_deep",
]
