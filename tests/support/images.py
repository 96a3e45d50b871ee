"""Reading the plots back: SVG with ``xml.etree`` (groups by id, marker and vertex
positions), PNG dimensions from its IHDR chunk with ``struct``."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

SVG_NS = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def svg_root(data: bytes) -> ET.Element:
    """The parsed document; asserts its root is ``<svg>``."""
    root = ET.fromstring(data)
    assert root.tag == f"{SVG_NS}svg", root.tag
    return root


def svg_group(data: bytes | ET.Element, gid: str) -> ET.Element | None:
    """The ``<g id=gid>`` element, or None."""
    root = svg_root(data) if isinstance(data, bytes) else data
    return root.find(f".//{SVG_NS}g[@id='{gid}']")


def svg_ids(data: bytes) -> set[str]:
    """Every ``id`` of a ``<g>`` in the document."""
    return {g.attrib["id"] for g in svg_root(data).iter(f"{SVG_NS}g") if "id" in g.attrib}


def markers(group: ET.Element) -> list[tuple[float, float]]:
    """(x, y) of each marker (``<use>``) drawn in ``group``, in drawing order (SVG y points
    down)."""
    return [(float(u.attrib["x"]), float(u.attrib["y"])) for u in group.iter(f"{SVG_NS}use")]


def path_vertices(group: ET.Element) -> list[tuple[float, float]]:
    """(x, y) of the vertices of the first ``<path>`` in ``group`` (``M``/``L`` commands)."""
    path = group.find(f".//{SVG_NS}path")
    assert path is not None
    tokens = path.attrib["d"].replace("\n", " ").split()
    points = []
    i = 0
    while i < len(tokens):
        if tokens[i] in ("M", "L"):
            points.append((float(tokens[i + 1]), float(tokens[i + 2])))
            i += 3
        else:
            i += 1
    return points


def stroke(group: ET.Element) -> str:
    """The stroke colour (``#rrggbb``) of the first ``<path>`` in ``group``."""
    path = group.find(f".//{SVG_NS}path")
    assert path is not None
    style = dict(
        part.strip().split(": ", 1) for part in path.attrib["style"].split(";") if part.strip()
    )
    return style["stroke"]


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from the IHDR chunk; asserts the PNG signature."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR"
    assert length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height
