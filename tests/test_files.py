"""Atomic files and folders: where an output path cannot be made, a sentence says why."""

import os
from pathlib import Path

import pytest

from fvjax import files
from fvjax.errors import OutputPathError


def _everything(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_an_existing_file_is_no_output_folder(tmp_path):
    (tmp_path / "out").write_text("mine")
    message = f"output folder {tmp_path / 'out'} is an existing file, not a folder; "
    assert files.directory_problem(tmp_path / "out") == (
        message + "choose another output path or move it away"
    )
    with pytest.raises(OutputPathError, match="is an existing file, not a folder"):
        files.make_directory(tmp_path / "out")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    assert "link is a broken link, not a folder" in files.directory_problem(tmp_path / "link")
    assert (tmp_path / "out").read_text() == "mine"


def test_a_folder_under_a_file_names_the_file(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "a" / "b"
    want = (
        f"output folder {out} cannot be created: {tmp_path / 'notes.txt'} is a file, not a "
        "folder; choose another output path"
    )
    assert files.directory_problem(out) == want
    for write in (
        lambda: files.make_directory(out),
        lambda: files.atomic_write(out / "x.json", "{}"),
        lambda: files.write_directory(out / "d", lambda staging: None),
    ):
        with pytest.raises(OutputPathError, match="notes.txt is a file, not a folder"):
            write()
    assert _everything(tmp_path) == ["notes.txt"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_place_that_takes_no_folders_is_named():
    want = (
        "output folder /proc/fvjax-out/a cannot be created: /proc takes no new folders "
        "(No such file or directory); choose another output path, in a folder you can write to"
    )
    assert files.directory_problem("/proc/fvjax-out/a") == want
    with pytest.raises(OutputPathError) as info:
        files.make_directory("/proc/fvjax-out/a")
    assert str(info.value) == want  # not mkdir's misleading "[Errno 2]"


def test_a_folder_without_write_permission_is_named(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes into any folder: be refused as a user would be

        def refused(dir, prefix):
            raise PermissionError(13, "Permission denied", dir)

        monkeypatch.setattr(files.tempfile, "mkdtemp", refused)
    try:
        problem = files.directory_problem(locked / "out")
        assert problem == (
            f"output folder {locked / 'out'} cannot be created: {locked} takes no new folders "
            "(Permission denied); choose another output path, in a folder you can write to"
        )
        assert files.directory_problem(locked).startswith(
            f"output folder {locked} cannot be written: it takes no new folders (Permission"
        )
    finally:
        locked.chmod(0o700)


def test_a_folder_that_can_be_made_is_not_made_by_the_check(tmp_path):
    assert files.directory_problem(tmp_path / "a" / "b") is None
    assert files.directory_problem(tmp_path) is None
    assert _everything(tmp_path) == []  # the probe folder is gone
    assert files.make_directory(tmp_path / "a" / "b").is_dir()


class Killed(BaseException):
    pass


def test_a_kill_while_removing_a_folder_leaves_it_whole_or_gone(tmp_path, monkeypatch):
    inflight = tmp_path / "inflight"
    (inflight / "tree").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (inflight / "tree" / name).write_bytes(b"data")

    def killed_after_one_file(path, ignore_errors=False):
        next(Path(path).rglob("a")).unlink()
        raise Killed  # what SIGKILL does to shutil.rmtree mid-way

    monkeypatch.setattr(files.shutil, "rmtree", killed_after_one_file)
    with pytest.raises(Killed):
        files.remove_directory(inflight)
    assert not inflight.exists()  # no half of it left under its name
    monkeypatch.undo()
    files.remove_staging(tmp_path)  # what the next run does first
    assert _everything(tmp_path) == []
    files.remove_directory(inflight)  # nothing there: nothing to do
