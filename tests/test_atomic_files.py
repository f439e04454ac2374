"""atomic_files: whole files only, no temporary left on failure, umask honoured, fixed temporary names."""

import os
import stat

import pytest

from modeling_uniqa.core.atomic_files import atomic_write, atomic_write_text


def write_bytes(data):
    def write(temporary):
        with open(temporary, "wb") as handle:
            handle.write(data)

    return write


def test_writes_the_file_in_place_of_the_old_one(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    seen = []

    def write(temporary):
        seen.append(temporary)
        assert os.path.dirname(temporary) == str(tmp_path)  # same folder: same filesystem, atomic rename
        assert os.path.isfile(temporary) and target.read_bytes() == b"old"  # the old file stays until the end
        write_bytes(b"new")(temporary)

    atomic_write(target, write)
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]
    assert os.path.basename(seen[0]).startswith(".out.bin.") and seen[0].endswith(".tmp")


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failing_write_leaves_the_previous_file_and_no_temporary(tmp_path, failure):
    target = tmp_path / "out.json"
    target.write_text("previous")

    def half_then_fail(temporary):
        with open(temporary, "w") as handle:
            handle.write("half")
        raise failure

    with pytest.raises(type(failure)):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "previous"
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


def test_a_failing_write_creates_nothing_when_there_was_no_file(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_text(tmp_path / "new.txt", "caf\udce9", errors="strict")  # not encodable: fails mid-write
    assert os.listdir(tmp_path) == []


def test_a_failing_replace_removes_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("previous")

    def failing_replace(source, destination):
        raise OSError("read-only filesystem")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="read-only"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "previous" and sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_text_options(tmp_path):
    atomic_write_text(tmp_path / "a.csv", "x\ncaf\udce9\n", errors="surrogateescape", newline="")
    assert (tmp_path / "a.csv").read_bytes() == b"x\ncaf\xe9\n"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_honour_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.bin", write_bytes(b"a"))
        atomic_write(tmp_path / "b.bin", write_bytes(b"b"), temporary_name=".b.tmp")
    finally:
        os.umask(previous)
    for name in ("a.bin", "b.bin"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask


def test_a_fixed_temporary_name_overwrites_a_stale_one(tmp_path):
    (tmp_path / ".out.tmp").write_bytes(b"left by a SIGKILL, longer than the new file")
    atomic_write(tmp_path / "out", write_bytes(b"new"), temporary_name=".out.tmp")
    assert sorted(os.listdir(tmp_path)) == ["out"] and (tmp_path / "out").read_bytes() == b"new"
    with pytest.raises(ValueError, match="bare file name"):
        atomic_write(tmp_path / "out", write_bytes(b"x"), temporary_name="../elsewhere.tmp")


def test_concurrent_writers_get_their_own_temporaries(tmp_path):
    """A write started inside another one (as two processes could) does not clobber its file."""
    target = tmp_path / "out"

    def outer(temporary):
        write_bytes(b"outer")(temporary)
        atomic_write(target, write_bytes(b"inner"))
        with open(temporary, "rb") as handle:
            assert handle.read() == b"outer"

    atomic_write(target, outer)
    assert target.read_bytes() == b"outer" and sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_safetensors_written_by_the_tools_honour_the_umask(tmp_path, tiny_model_factory, umask):
    """Issue 23: every model.safetensors was 0600 (safetensors' own mode) whatever the umask."""
    import torch
    from safetensors.torch import save_file

    from modeling_uniqa.core.adapter_io import save_adapter
    from train_scripts.common.checkpointing import write_model_folder

    previous = os.umask(umask)
    try:
        write_model_folder(str(tmp_path / "trained"), lambda folder: tiny_model_factory().save_pretrained(folder))
        adapter = save_adapter(tiny_model_factory(), tmp_path / "adapter", base_name="org/base")
        atomic_write(tmp_path / "index.safetensors", lambda temporary: save_file({"a": torch.zeros(2)}, temporary))
    finally:
        os.umask(previous)
    for path in (tmp_path / "trained" / "model.safetensors", tmp_path / "trained" / "config.json",
                 os.path.join(adapter, "uniqa_adapter.safetensors"), tmp_path / "index.safetensors"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, path
