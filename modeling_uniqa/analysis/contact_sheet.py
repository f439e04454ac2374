"""Pictures of a ranking: a contact-sheet PNG and an HTML page, one row per query.

Both take a list of `(query, [(path, similarity), ...])` in rank order, as
`retrieve.RetrievalResult` holds it, and show the same ranking.
"""

import html
import os
import urllib.parse

from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..core.atomic_files import atomic_write, atomic_write_text
from ..processing_uniqa import UniQAImageError, load_image

BACKGROUND = (255, 255, 255)
CELL_BACKGROUND = (232, 232, 232)
TEXT_COLOR = (20, 20, 20)
PADDING = 8


def _thumbnail(path: str, size: int) -> Image.Image:
    """The image fitted into a `size` square (aspect kept), or a grey tile saying it is unreadable."""
    try:
        image = load_image(path)
    except UniQAImageError:
        tile = Image.new("RGB", (size, size), (180, 180, 180))
        ImageDraw.Draw(tile).text((4, size // 2 - 6), "unreadable", fill=TEXT_COLOR, font=ImageFont.load_default())
        return tile
    return ImageOps.contain(image, (size, size), Image.BICUBIC)  # shrinks or enlarges, aspect kept


def _wrap(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> list:
    """Greedy word wrap of `text` into lines at most `width` pixels wide (long words are cut)."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate, font=font) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
        while draw.textlength(line, font=font) > width and len(line) > 1:  # a single over-long word
            cut = len(line) - 1
            while cut > 1 and draw.textlength(line[:cut], font=font) > width:
                cut -= 1
            lines.append(line[:cut])
            line = line[cut:]
    return [*lines, line] if line else lines


def render_contact_sheet(results, thumb_size: int = 160, label_width: int = 160) -> Image.Image:
    """One row per query: the query text, then its hits as thumbnails captioned `#rank  similarity`."""
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = int(probe.textbbox((0, 0), "#0 Ag", font=font)[3]) + 4
    columns = max([len(hits) for _, hits in results] + [1])
    cell_width, cell_height = thumb_size + PADDING, thumb_size + line_height + PADDING
    width = PADDING + label_width + columns * cell_width
    height = PADDING + max(len(results), 1) * cell_height
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for row, (query, hits) in enumerate(results):
        top = PADDING + row * cell_height
        for number, line in enumerate(_wrap(query, font, label_width - PADDING, draw)[: max(1, thumb_size // line_height)]):
            draw.text((PADDING, top + number * line_height), line, fill=TEXT_COLOR, font=font)
        for column, (path, similarity) in enumerate(hits):
            left = PADDING + label_width + column * cell_width
            draw.rectangle((left, top, left + thumb_size - 1, top + thumb_size - 1), fill=CELL_BACKGROUND)
            thumb = _thumbnail(path, thumb_size)
            sheet.paste(thumb, (left + (thumb_size - thumb.width) // 2, top + (thumb_size - thumb.height) // 2))
            draw.text((left, top + thumb_size + 2), f"#{column + 1}  {similarity:.4f}", fill=TEXT_COLOR, font=font)
    return sheet


def write_contact_sheet(results, path: str, thumb_size: int = 160) -> None:
    """Render the contact sheet and write it atomically as PNG to `path`."""
    sheet = render_contact_sheet(results, thumb_size=thumb_size)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(os.path.abspath(path), lambda temporary: sheet.save(temporary, format="PNG"))


def display_path(path: str) -> str:
    """A path as printable text: bytes of a non-UTF-8 file name become `\\xNN` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def image_link(image_path: str, page_dir: str) -> str:
    """The `src` of an image on a page in `page_dir`: a relative URL when one exists (so the page
    and images can move together), else a `file://` URL; percent-encoded either way, the raw
    bytes of non-UTF-8 file names included."""
    try:
        link = os.path.relpath(image_path, page_dir)
    except ValueError:  # another drive (Windows)
        return "file://" + urllib.parse.quote(os.path.abspath(image_path).replace(os.sep, "/"), errors="surrogateescape")
    return urllib.parse.quote(link.replace(os.sep, "/"), errors="surrogateescape")


def render_html(results, page_dir: str, thumb_size: int = 160, title: str = "UniQA retrieval") -> str:
    """The HTML page: a section per query, its hits as linked thumbnails with rank and similarity."""
    escape = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}ol{display:flex;flex-wrap:wrap;gap:8px;list-style:none;padding:0}"
        f"li{{width:{thumb_size}px}}img{{width:{thumb_size}px;height:{thumb_size}px;object-fit:contain;background:#e8e8e8}}"
        "figcaption{font-size:12px;word-break:break-all}</style>",
        f"</head><body><h1>{escape(title)}</h1>",
    ]
    for query, hits in results:
        parts.append(f"<section><h2>{escape(query)}</h2><ol>")
        for rank, (path, similarity) in enumerate(hits, start=1):
            link = escape(image_link(path, page_dir), quote=True)
            name = escape(display_path(os.path.basename(path)))
            parts.append(
                f'<li><figure><a href="{link}"><img src="{link}" alt="{name}" loading="lazy"></a>'
                f'<figcaption><b>#{rank}</b> {similarity:.4f}<br><span title="{escape(display_path(path), quote=True)}">{name}</span></figcaption></figure></li>'
            )
        parts.append("</ol></section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(results, path: str, thumb_size: int = 160) -> None:
    """Write the HTML page atomically to `path`; image links are relative to its folder."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, render_html(results, os.path.dirname(path), thumb_size=thumb_size))


__all__ = ["display_path", "image_link", "render_contact_sheet", "render_html", "write_contact_sheet", "write_html"]
