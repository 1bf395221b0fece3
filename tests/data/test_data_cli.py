"""``crabzoo data synth | check | preview`` end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from crabzoo.cli import main as crabzoo


def test_synth_check_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    crabzoo(["data", "synth", "--out", str(out), "--clips", "4", "--tasks", "s4", "ave", "--quiet", "--size", "32",
             "--no-soundtrack"])
    text = capsys.readouterr().out
    assert "wrote 4 clips" in text and "s4" in text
    crabzoo(["data", "check", str(out)])
    text = capsys.readouterr().out
    assert "all referenced files exist and decode" in text
    assert "s4        test          5" in text  # 1 test clip x 5 frames
    crabzoo(["data", "preview", str(out), "--out", str(tmp_path / "sheets")])
    sheets = sorted(p.name for p in (tmp_path / "sheets").glob("*.png"))
    assert sheets == ["ave.png", "s4.png"]
    with Image.open(tmp_path / "sheets" / "s4.png") as img:
        assert img.size[0] > 100 and img.size[1] > 100

    (out / "AVUIE_2" / "s4" / "AVS" / "v1s" / "s4_00001" / "audio.wav").write_bytes(b"broken")
    (out / "AVUIE_2" / "ave" / "video" / "ave_00000.mp4").unlink()
    with pytest.raises(SystemExit) as info:
        crabzoo(["data", "check", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "problem(s)" in err and "s4_00001/audio.wav" in err and "ave_00000.mp4: file not found" in err


def test_bad_options_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        crabzoo(["data", "synth", "--out", str(tmp_path), "--clips", "3", "--noise", "3"])
    assert info.value.code == 2
    assert "noise must be in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        crabzoo(["data", "synth", "--out", str(tmp_path), "--clips", "many"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        crabzoo(["data", "check", str(tmp_path / "missing")])
    assert info.value.code == 2
    assert "crabzoo data synth --out" in capsys.readouterr().err
