"""An SVG a run wrote, made safe to copy into a report: only drawing elements and attributes survive.

A run folder may be written by anyone who trains (see store.runfiles), and an SVG can carry active content:
<script>, event handlers (onload=...), <foreignObject> holding HTML, links to javascript: or to other sites,
CSS that fetches. The HTML shows a run's figure as an <img>, which browsers never script, but figures/ holds
the file itself, which a browser opened on it would run. So the file is parsed without its prolog (no DTD,
hence no entity can be declared or expanded: what defusedxml guards against) and kept only as far as a
whitelist of SVG drawing elements and attributes goes. What matplotlib writes (sweeplab's own figures:
decision boundaries, attention maps) passes whole. No sanitiser library is installed: the whitelist is short.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

SVG = "http://www.w3.org/2000/svg"
XLINK = "http://www.w3.org/1999/xlink"
XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"
HREFS = ("href", f"{{{XLINK}}}href")
ELEMENTS = frozenset("""svg g defs path use image clipPath mask pattern marker symbol rect circle ellipse line
    polyline polygon text tspan style linearGradient radialGradient stop title desc""".split())
ATTRIBUTES = frozenset("""id class style type transform d x y x1 y1 x2 y2 cx cy r rx ry dx dy width height viewBox
    version preserveAspectRatio points fill fill-opacity fill-rule stroke stroke-width stroke-opacity
    stroke-linecap stroke-linejoin stroke-miterlimit stroke-dasharray stroke-dashoffset opacity clip-path
    clip-rule mask font-family font-size font-style font-weight text-anchor dominant-baseline letter-spacing
    offset stop-color stop-opacity gradientUnits gradientTransform patternUnits patternContentUnits
    patternTransform clipPathUnits maskUnits markerWidth markerHeight refX refY orient image-rendering""".split())
MAX_DEPTH = 64  # matplotlib nests a few levels; a deeper file is cut there (and the rewrite stays shallow)
_LOCAL_URL = re.compile(r"url\(\s*#[\w.:-]+\s*\)")
# A link to an element of the same file, or a PNG drawn inline (matplotlib's rasterised parts and images).
_HREF = re.compile(r"#[\w.:-]+|data:image/png;base64,[A-Za-z0-9+/=\s]+")

ET.register_namespace("xlink", XLINK)  # written as xlink:href, which every SVG reader knows


class UnsafeSvg(ValueError):
    """Not an SVG document this module can clean (unparseable, another root element, an entity)."""


def clean_svg(data: bytes) -> bytes:
    """`data` with every element and attribute outside the whitelist dropped."""
    start = data.find(b"<svg")
    if start < 0:
        raise UnsafeSvg("no <svg> element")
    try:  # from the root element on: a DOCTYPE (and any entity it declares) is left behind
        root = ET.fromstring(data[start:])
    except ET.ParseError as exc:
        raise UnsafeSvg(f"not well-formed SVG ({exc})") from None
    if root.tag != f"{{{SVG}}}svg":
        raise UnsafeSvg(f"the root element is {root.tag!r}, not an SVG <svg>")
    root.tag = "svg"
    _clean(root, depth=0)
    root.set("xmlns", SVG)  # every kept element is SVG's: written unprefixed, under one declaration
    return ET.tostring(root, encoding="utf-8")


def _clean(element: ET.Element, depth: int) -> None:
    for child in list(element):
        name = _local_name(child.tag)
        if depth >= MAX_DEPTH or name not in ELEMENTS:
            element.remove(child)
            continue
        child.tag = name
        _clean(child, depth + 1)
    for name, value in list(element.attrib.items()):
        if not _allowed(name, value):
            del element.attrib[name]
    if element.tag == "style" and not _safe_css(element.text or ""):
        element.text = ""


def _local_name(tag: object) -> str | None:
    """The SVG name of an element; None for any other namespace (XHTML, none) and for comments."""
    prefix = f"{{{SVG}}}"
    return tag[len(prefix):] if isinstance(tag, str) and tag.startswith(prefix) else None


def _allowed(name: str, value: str) -> bool:
    if name in HREFS:
        return bool(_HREF.fullmatch(value.strip()))
    return (name in ATTRIBUTES or name == XML_SPACE) and _safe_css(value)


def _safe_css(text: str) -> bool:
    """Nothing fetched: url() only to an element of the same file, no @import, no escape that could spell one."""
    rest = _LOCAL_URL.sub("", text).lower()
    return not any(bad in rest for bad in ("url(", "@import", "\\", "expression("))
