"""Real photographs that can be had offline: Debian packages and scikit-image's samples.

UniQA-Tiny's recipe (`train_scripts/make_quality_corpus.py`) needs pristine-looking photographs
to distort. With no Hub and no web, they come from packages a package manager can fetch:

* Debian packages (`apt-get download` into a cache folder, unpacked with `dpkg-deb -x`; no
  root needed, nothing installed). `gcompris-qt-data` stores its pictures as WebP files inside
  Qt resource bundles (`.rcc`), which :func:`rcc_files` reads (the documented rcc layout:
  header, tree, names, data; zlib- or zstd-compressed entries are inflated).
* scikit-image's bundled sample photographs (a Python dependency of the recipe).

Every photo carries its source, package version, path inside the package, licence and
copyright holder, read from the package's machine-readable `copyright` file (DEP-5), so
`SOURCES.md` is written from facts, not by hand. Sources are the unit of the train / held-out
split: a whole package is held out, not files of one.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import io
import os
import re
import struct
import subprocess
import zlib
from dataclasses import dataclass, field

from PIL import Image

from modeling_uniqa.errors import UniQAError

# Wallpapers reach 5120x2880; they are trusted package files. Raised only while a source is read
# (`load_source`), never for the whole process: everyone else keeps PIL's decompression-bomb guard.
TRUSTED_MAX_PIXELS = 400_000_000


@dataclass(frozen=True)
class PhotoSource:
    """Where a group of photos comes from.

    Args:
        name: the source's name (the split unit), e.g. the Debian package.
        kind: ``deb`` (plain image files), ``deb-rcc`` (images inside Qt resource bundles) or
            ``skimage`` (scikit-image's sample data).
        include: file-name patterns (fnmatch, matched against the path inside the package or
            bundle) of the photos to take; photos are chosen by name, by hand (drawings,
            renders and paintings left out).
        exclude: patterns to leave out of what ``include`` matched.
        rcc: for ``deb-rcc``, the bundles (file names under the package) to open.
    """

    name: str
    kind: str
    include: tuple
    exclude: tuple = ()
    rcc: tuple = ()


SOURCES = (
    PhotoSource(
        "gcompris-qt-data",
        "deb-rcc",
        include=("*/erase/resource/*.webp", "*/explore_*/resource/*.webp", "*/clickgame/resource/*.webp",
                 "*/details/resource/*_background.webp"),
        exclude=("*Gogh*", "*Tanguy*", "*Auvers*", "*/explore_*/resource/*map*", "*transparent*"),
        rcc=("erase.rcc", "explore_monuments.rcc", "explore_world_animals.rcc", "explore_farm_animals.rcc",
             "explore_world_music.rcc", "clickgame.rcc", "details.rcc"),
    ),
    PhotoSource(
        "plasma-workspace-wallpapers",
        "deb",
        include=tuple(
            f"usr/share/wallpapers/{name}/contents/images/*"
            for name in ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                         "OneStandsOut", "Path")
        ),
    ),
    PhotoSource(
        "lomiri-wallpapers-16.04",
        "deb",
        include=("usr/share/backgrounds/*.jpg",),
        exclude=("*umang_by*", "*greentock_by*"),
    ),
    PhotoSource("mate-backgrounds", "deb", include=("usr/share/backgrounds/mate/nature/*.jpg",)),
    PhotoSource("lomiri-wallpapers-20.04", "deb", include=("usr/share/backgrounds/Kleiber_by_*.jpg",)),
    PhotoSource("scikit-image", "skimage", include=("astronaut", "chelsea", "coffee", "rocket")),
)
SOURCE_NAMES = tuple(source.name for source in SOURCES)
# Photos that no recipe trains or selects on, nor the demo: the benchmark's second check on
# unseen photos (`benchmarks/bench_default_model.py --sources palapeli-data`). KDE's jigsaw photos.
BENCHMARK_ONLY_SOURCES = (PhotoSource("palapeli-data", "deb", include=("usr/share/palapeli/collection/*.jpg",)),)
MIN_SHORT_SIDE = 300  # smaller pictures in the bundles are icons and thumbnails

# scikit-image's sample photographs: (author / source, licence), from each loader's docstring.
SKIMAGE_LICENCES = {
    "astronaut": ("Eileen Collins, NASA", "public-domain"),
    "chelsea": ("Stefan van der Walt", "CC0-1.0"),
    "coffee": ("Rachel Michetti", "CC0-1.0"),
    "rocket": ("SpaceX", "public-domain"),
}


class PhotoSourceError(UniQAError, RuntimeError):
    """A package cannot be fetched or read; the message says which and what to do."""


@dataclass
class Photo:
    """One photograph: its pixels (RGB) and where it came from."""

    source: str
    path: str  # inside the package / bundle, or the skimage name
    image: Image.Image
    licence: str
    copyright: str
    version: str = ""
    notes: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------- packages
def fetch_deb(package: str, cache_dir: str) -> tuple[str, str]:
    """The unpacked folder and version of Debian `package`, downloaded into `cache_dir` with
    `apt-get download` when not there yet. Returns `(folder, version)`."""
    os.makedirs(cache_dir, exist_ok=True)
    debs = sorted(glob.glob(os.path.join(cache_dir, f"{package}_*.deb")))
    if not debs:
        try:
            subprocess.run(["apt-get", "download", package], cwd=cache_dir, check=True, capture_output=True, text=True)
        except FileNotFoundError as error:
            raise PhotoSourceError(f"{package}: apt-get is not available; put {package}_*.deb into {cache_dir} by hand") from error
        except subprocess.CalledProcessError as error:
            raise PhotoSourceError(f"{package}: apt-get download failed ({error.stderr.strip()[-300:]})") from error
        debs = sorted(glob.glob(os.path.join(cache_dir, f"{package}_*.deb")))
        if not debs:
            raise PhotoSourceError(f"{package}: apt-get download wrote no .deb into {cache_dir}")
    deb = debs[-1]
    folder = os.path.join(cache_dir, package)
    if not os.path.isdir(folder):
        subprocess.run(["dpkg-deb", "-x", deb, folder + ".partial"], check=True)
        os.replace(folder + ".partial", folder)
    version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True, capture_output=True, text=True).stdout.strip()
    return folder, version


def read_dep5(path: str) -> list[tuple[list[str], str, str]]:
    """The `Files` stanzas of a DEP-5 copyright file: `[(patterns, copyright, licence)]`."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "files" in fields:
            licence = fields.get("license", "").split("\n")[0].strip()
            holder = " ".join(fields.get("copyright", "").split())
            stanzas.append((fields["files"].split(), holder, licence))
    return stanzas


def licence_of(stanzas, path: str) -> tuple[str, str]:
    """`(copyright, licence)` of `path` by DEP-5's rule: the last stanza whose pattern matches.
    Patterns are matched against the path and against its tail (copyright files name paths of
    the source tree, packages install them elsewhere)."""
    found = ("", "")
    parts = path.split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]

    def matches(pattern: str) -> bool:
        if any(fnmatch.fnmatchcase(tail, pattern) for tail in tails):
            return True
        # `16.04/x.jpg` in the source tree is installed as `usr/share/backgrounds/x.jpg`.
        folder, _, name = pattern.rpartition("/")
        return bool(folder) and "*" not in folder and name != "*" and fnmatch.fnmatchcase(parts[-1], name)

    for patterns, holder, licence in stanzas:
        if any(matches(pattern) for pattern in patterns):
            found = (holder, licence)
    return found


# --------------------------------------------------------------------------------- Qt resources
def rcc_files(path: str) -> dict[str, bytes]:
    """The files of a Qt resource bundle (`.rcc`, format versions 1-3): `{path: bytes}`."""
    with open(path, "rb") as handle:
        blob = handle.read()
    if blob[:4] != b"qres":
        raise PhotoSourceError(f"{path}: not a Qt resource bundle (no 'qres' magic)")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    entry_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", blob[names + offset : names + offset + 2])
        return blob[names + offset + 6 : names + offset + 6 + 2 * length].decode("utf-16-be")

    def payload(offset: int, flags: int) -> bytes:
        (size,) = struct.unpack(">I", blob[data + offset : data + offset + 4])
        raw = blob[data + offset + 4 : data + offset + 4 + size]
        if flags & 1:  # zlib, behind a 4-byte uncompressed length
            return zlib.decompress(raw[4:])
        if flags & 4:
            import zstandard  # only bundles built with zstd need it

            return zstandard.ZstdDecompressor().decompress(raw)
        return raw

    files, stack = {}, [(0, "")]
    while stack:
        index, prefix = stack.pop()
        at = tree + index * entry_size
        name_offset, flags = struct.unpack(">IH", blob[at : at + 6])
        name = name_at(name_offset) if index else ""
        if flags & 2:  # a directory: child count, first child
            count, first = struct.unpack(">II", blob[at + 6 : at + 14])
            stack.extend((child, f"{prefix}{name}/" if index else "") for child in range(first, first + count))
        else:
            (data_offset,) = struct.unpack(">I", blob[at + 10 : at + 14])
            files[prefix + name] = payload(data_offset, flags)
    return files


def _matches(path: str, source: PhotoSource) -> bool:
    return any(fnmatch.fnmatchcase(path, p) for p in source.include) and not any(
        fnmatch.fnmatchcase(path, p) for p in source.exclude
    )


def _open_rgb(data, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        image.load()
    except Exception as error:  # a bad file in a package: say which
        raise PhotoSourceError(f"{name}: cannot decode ({error})") from error
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        if image.getextrema()[3][0] < 250:
            return None  # cut-outs on transparency are not photographs
    return image.convert("RGB")


@contextlib.contextmanager
def _trusted_large_images():
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, TRUSTED_MAX_PIXELS
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


@_trusted_large_images()
def load_source(source: PhotoSource, cache_dir: str) -> list[Photo]:
    """The photos of one source, in a stable order (sorted by path)."""
    if source.kind == "skimage":
        try:
            import skimage
            from skimage import data as samples
        except ImportError as error:
            raise PhotoSourceError("scikit-image is needed for its sample photographs: pip install scikit-image") from error
        photos = []
        for name in source.include:
            author, licence = SKIMAGE_LICENCES[name]
            photos.append(Photo(source.name, name, Image.fromarray(getattr(samples, name)()).convert("RGB"), licence, author, skimage.__version__))
        return photos
    folder, version = fetch_deb(source.name, cache_dir)
    copyright_file = os.path.join(folder, "usr/share/doc", source.name, "copyright")
    stanzas = read_dep5(copyright_file) if os.path.exists(copyright_file) else []
    photos = []
    if source.kind == "deb-rcc":
        bundles = [os.path.join(folder, "usr/share/gcompris-qt/rcc", name) for name in source.rcc]
        for bundle in bundles:
            if not os.path.exists(bundle):
                raise PhotoSourceError(f"{source.name} {version}: {bundle} is missing; the recipe expects version 3.1")
            for path, data in sorted(rcc_files(bundle).items()):
                if _matches(path, source):
                    image = _open_rgb(data, f"{os.path.basename(bundle)}:{path}")
                    if image is not None and min(image.size) >= MIN_SHORT_SIDE:
                        holder, licence = licence_of(stanzas, path)
                        photos.append(Photo(source.name, path, image, licence, holder, version, {"bundle": os.path.basename(bundle)}))
    else:
        candidates = sorted(
            os.path.relpath(p, folder) for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True) if os.path.isfile(p)
        )
        chosen = [p for p in candidates if _matches(p, source)]
        if source.kind == "deb" and any("/contents/images/" in p for p in chosen):
            chosen = _largest_per_wallpaper(folder, chosen)
        for path in chosen:
            image = _open_rgb(os.path.join(folder, path), f"{source.name}:{path}")
            if image is not None:
                holder, licence = licence_of(stanzas, path)
                photos.append(Photo(source.name, path, image, licence, holder, version))
    if not photos:
        raise PhotoSourceError(f"{source.name} {version}: no photo matched {source.include}")
    return photos


def _largest_per_wallpaper(folder: str, paths: list[str]) -> list[str]:
    """KDE wallpapers ship one picture in several sizes: keep the largest of each."""
    best = {}
    for path in paths:
        key = path.split("/contents/")[0]
        with Image.open(os.path.join(folder, path)) as image:
            area = image.width * image.height
        if key not in best or area > best[key][0]:
            best[key] = (area, path)
    return sorted(path for _, path in best.values())


__all__ = ["BENCHMARK_ONLY_SOURCES", "MIN_SHORT_SIDE", "Photo", "PhotoSource", "PhotoSourceError", "SOURCES", "SOURCE_NAMES", "fetch_deb", "licence_of", "load_source", "rcc_files", "read_dep5"]
