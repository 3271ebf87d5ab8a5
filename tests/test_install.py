"""`pip install -e .` works, puts the repository on the path and nothing else into site-packages; `pip install .` is refused.

Runs pip against a copy of the repository and a fresh virtual environment
whose dependencies come from this interpreter's site-packages (a ``.pth``
line), so nothing is downloaded (``--no-deps --no-build-isolation``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "output", "runs", "phantom_data", "pubmed", "__pycache__",
                                     "*.egg-info", "build", ".pytest_cache")


def _pip(venv_python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(venv_python), "install", "--no-deps",
                           "--no-build-isolation", "--no-input", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=300)


def test_editable_install_from_any_folder(tmp_path):
    source = tmp_path / "MedVLP"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co. from here

    refused = _pip(python, str(source))
    assert refused.returncode != 0 and "installs as an editable checkout only" in refused.stdout + refused.stderr

    done = _pip(python, "-e", str(source))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    installed = sorted(p.name for p in site.iterdir())
    assert installed == ["__editable__.medvlp-0.1.0.pth", "dependencies.pth", "medvlp-0.1.0.dist-info"]
    assert (site / "__editable__.medvlp-0.1.0.pth").read_text().strip() == str(source)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import models, engine; print(models.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, timeout=120)
    assert where.stdout.strip() == str(source / "models" / "__init__.py"), where.stderr
    for script in ("medvlp-pretrain", "medvlp-train-retrieval", "medvlp-scrape", "medvlp-export", "medvlp-tokenizer"):
        assert (venv / "bin" / script).exists(), script
    check = subprocess.run([str(venv / "bin" / "medvlp-pretrain"), "--config", str(source / "configs" / "pretrain.yaml"),
                            "--check"], cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-2000:]
    # configs/pretrain.yaml names configs/med_config.json relative to the repository: found from another folder
    assert f"\nmed_config: {source / 'configs' / 'med_config.json'}\n" in check.stdout
