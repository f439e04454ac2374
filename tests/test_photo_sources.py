import struct
import zlib

import pytest

from train_scripts.common.photo_sources import PhotoSourceError, licence_of, rcc_files, read_dep5

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: wallpapers

Files: *
Copyright: 2014 Default Holder
License: GPL-2+

Files: 16.04/aitzgorri_by_Aitzol_Berasategi.jpg
Copyright: Aitzol Berasategi, 2018
License: CC-BY-4.0

Files: src/activities/erase/resource/*
Copyright: 2015 Someone
 2016 Someone Else
License: GPL-3+
 The full text is in /usr/share/common-licenses.
"""


def test_dep5_licences_follow_the_last_matching_stanza(tmp_path):
    path = tmp_path / "copyright"
    path.write_text(DEP5)
    stanzas = read_dep5(str(path))
    assert licence_of(stanzas, "usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg") == ("Aitzol Berasategi, 2018", "CC-BY-4.0")
    assert licence_of(stanzas, "gcompris/src/activities/erase/resource/horse.webp") == ("2015 Someone 2016 Someone Else", "GPL-3+")
    assert licence_of(stanzas, "usr/share/backgrounds/other.jpg") == ("2014 Default Holder", "GPL-2+")


def _rcc(files: dict, compress: set) -> bytes:
    """A Qt resource bundle (format 3) holding `files` ({"dir/name": bytes}) in one folder."""
    folder = next(iter(files)).split("/")[0]
    names, name_offsets = b"", {}
    for name in [folder, *(f.split("/")[1] for f in files)]:
        name_offsets[name] = len(names)
        encoded = name.encode("utf-16-be")
        names += struct.pack(">HI", len(name), 0) + encoded
    data, data_offsets = b"", {}
    for path, payload in files.items():
        data_offsets[path] = len(data)
        blob = struct.pack(">I", len(payload)) + zlib.compress(payload) if path in compress else payload
        data += struct.pack(">I", len(blob)) + blob
    entry = lambda name_offset, flags, a, b: struct.pack(">IHII", name_offset, flags, a, b) + b"\0" * 8  # noqa: E731
    tree = entry(0, 2, 1, 1) + entry(name_offsets[folder], 2, len(files), 2)
    for path in files:
        flags = 1 if path in compress else 0
        tree += struct.pack(">IHHHI", name_offsets[path.split("/")[1]], flags, 0, 0, data_offsets[path]) + b"\0" * 8
    header = 24
    return b"qres" + struct.pack(">IIIII", 3, header, header + len(tree), header + len(tree) + len(data), 0) + tree + data + names


def test_rcc_bundles_are_read_with_names_and_compression(tmp_path):
    bundle = tmp_path / "a.rcc"
    bundle.write_bytes(_rcc({"res/a.webp": b"RIFF-plain", "res/b.txt": b"zipped text " * 20}, compress={"res/b.txt"}))
    files = rcc_files(str(bundle))
    assert files == {"res/a.webp": b"RIFF-plain", "res/b.txt": b"zipped text " * 20}
    (tmp_path / "bad.rcc").write_bytes(b"not a bundle")
    with pytest.raises(PhotoSourceError, match="not a Qt resource bundle"):
        rcc_files(str(tmp_path / "bad.rcc"))


def test_the_raised_pixel_limit_holds_only_while_a_source_is_read():
    from PIL import Image

    from train_scripts.common import photo_sources

    before = Image.MAX_IMAGE_PIXELS
    assert before != photo_sources.TRUSTED_MAX_PIXELS  # importing the module changes nothing
    with photo_sources._trusted_large_images():
        assert Image.MAX_IMAGE_PIXELS == photo_sources.TRUSTED_MAX_PIXELS
    assert before == Image.MAX_IMAGE_PIXELS


def test_benchmark_only_sources_are_never_read_by_the_recipe():
    from train_scripts import make_quality_corpus
    from train_scripts.common.photo_sources import BENCHMARK_ONLY_SOURCES, SOURCE_NAMES

    names = {source.name for source in BENCHMARK_ONLY_SOURCES}
    assert names and names.isdisjoint(SOURCE_NAMES)
    assert names.isdisjoint(source.name for source in make_quality_corpus.SOURCES)
