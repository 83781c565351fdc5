"""`pip install .`: the wheel holds the package `clip2point` and nothing under other top-level
names, its console scripts run the entry scripts, and the API works from anywhere."""
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from clip2point.commands import SCRIPTS, main, script_folder

REPO = Path(__file__).resolve().parents[1]


def test_every_console_script_names_an_entry_script():
    text = (REPO / "pyproject.toml").read_text()
    for name in SCRIPTS:
        assert f'clip2point-{name} = "clip2point.commands:main"' in text
        assert (REPO / f"{name}.py").is_file()
    assert script_folder() == str(REPO)  # in a checkout: the scripts at the top


def test_an_unknown_console_script_name_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/bin/clip2point-nothing"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "clip2point-nothing: not one of the console scripts" in err
    assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_the_wheel_installs_the_package_and_its_scripts(tmp_path, tiny_clip_path, synthetic_root):
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    source = tmp_path / "src"
    for name in listed.stdout.splitlines():
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    wheel, = (tmp_path / "dist").glob("clip2point-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"clip2point", wheel.name.split("-py")[0] + ".dist-info"}
    assert {f"clip2point/{p}/__init__.py" for p in ("datasets", "models", "render", "utils")} <= set(names)
    assert {f"clip2point/scripts/{s}.py" for s in SCRIPTS} <= set(names)
    site = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    assert not any((site / name).exists() for name in ("datasets", "models", "render", "utils"))

    cloud = sorted((synthetic_root / "ModelNet40_Ply").iterdir())[0]
    code = textwrap.dedent(f"""
        import sys
        import clip2point
        assert clip2point.__file__.startswith({str(site)!r}), clip2point.__file__
        model = clip2point.load_model(clip={tiny_clip_path!r}, device="cpu")
        emb = model.encode_clouds([{str(cloud)!r}])
        print(emb.shape, round(float((emb ** 2).sum()), 4))
        from clip2point.commands import main
        sys.argv = ["/some/bin/clip2point-embed", {str(cloud)!r}, "--out", "e.npy", "--clip", {tiny_clip_path!r}, "--device", "cpu"]
        main()
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "(1, 512) 1.0"
    assert "wrote e.npy (1 rows of 512)" in done.stderr and (tmp_path / "e.json").is_file()
