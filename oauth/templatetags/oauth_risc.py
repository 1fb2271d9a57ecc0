"""``{% risc_stream as stream %}``: whether Google's security event stream (RISC) is verified."""
from django import template

register = template.Library()


@register.simple_tag
def risc_stream() -> dict:
    from ..risc import stream_verified

    return stream_verified()
