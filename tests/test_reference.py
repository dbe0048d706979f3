"""The reference data ships inside the package: found without ../shared, with its licences, in the wheel."""

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sqzdse import reference as R

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ROOT / "sqzdse" / "reference"
CAFFE = ("SqueezeNet_v1.0", "SqueezeNet_v1.1", "SqueezeNet-Residual", "SqueezeNet-DSD", "SqueezeNet_compressed")


def data_files() -> list[str]:
    return sorted(str(p.relative_to(PACKAGE_DATA)) for p in PACKAGE_DATA.rglob("*") if p.is_file()
                  and p.suffix != ".py" and "__pycache__" not in p.parts)  # fmt: skip


def test_found_in_the_package_from_anywhere(tmp_path, monkeypatch):
    # A subprocess in an empty folder, with no ../shared beside it and no $SQZDSE_REFERENCE.
    monkeypatch.delenv("SQZDSE_REFERENCE", raising=False)
    code = "from sqzdse import reference as R; print(R.root()); print(R.paper_numbers()['table1']['rows'][-1][0])"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    where, last_row = out.stdout.split()
    assert Path(where) == PACKAGE_DATA and last_row == "total"


def test_every_release_has_its_licence_and_prototxt():
    for name in CAFFE:
        folder = PACKAGE_DATA / "caffe" / name
        licences = [p for p in folder.iterdir() if p.name in ("LICENSE", "LICENCE")]
        assert licences and "Redistribution and use" in licences[0].read_text(), name
        assert list(folder.glob("*.prototxt")), name
    assert (PACKAGE_DATA / "README.md").is_file()


def test_released_weights_are_the_released_bytes():
    fmt = R.load_json("caffe", "SqueezeNet_compressed", "compressed_SqueezeNet_format.json")
    net = R.weights_path(R.RELEASED)
    assert net.stat().st_size == fmt["files"]["compressed_SqueezeNet.net"]["bytes"] == 675_763
    assert hashlib.sha256(net.read_bytes()).hexdigest() == fmt["files"]["compressed_SqueezeNet.net"]["sha256"]
    assert R.weights_path("some/other.net") == Path("some/other.net")


def test_missing_file_and_override_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("SQZDSE_REFERENCE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"paper_numbers.json: not found in the reference data \(\$SQZDSE"):
        R.paper_numbers()
    (tmp_path / "paper_numbers.json").write_text(json.dumps({"table1": {}}))
    assert R.paper_numbers() == {"table1": {}}


def test_nothing_reads_the_shared_folder():
    # A user's clone or a pip install has no ../shared beside it.
    needle = "shared" + "/reference"
    for folder in ("sqzdse", "tests", "benchmarks", "sweeps", "experiments", "docs"):
        for p in (ROOT / folder).rglob("*"):
            if p.is_file() and p.suffix in (".py", ".sh", ".toml", ".md", ".json"):
                assert needle not in p.read_text(errors="ignore"), p
    assert needle not in (ROOT / "README.md").read_text()


def test_the_wheel_carries_the_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)  # fmt: skip
    (wheel,) = tmp_path.glob("sqzdse-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in data_files() if f"sqzdse/reference/{f}" not in names]
    assert not missing and len(data_files()) >= 20
