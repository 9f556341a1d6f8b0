"""An installed wheel carries its templates and compiles from them."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_installed_wheel_finds_its_templates(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("nncompile-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "nncompile/templates/numpy/program.py.j2" in names and "nncompile/datasets/digits.npz" in names
    assert {"nncompile/templates/report/page.html.j2", "nncompile/templates/report/script.js",
            "nncompile/templates/report/style.css"} <= set(names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    code = ("import nncompile as nc, numpy as np; from nncompile import nn; "
            "from nncompile.backends.templating import template_dir; "
            "assert str(template_dir()).startswith(%r), template_dir(); "
            "p = nc.compile(nn.Sequential(nn.Dense(2), nn.Tanh(), nn.Dense(1), input_dim=2, loss=nn.MSE())); "
            "from nncompile.report.page import report_html; assert report_html(p).count('<math') > 5; "
            "print(p.loss_and_grad(p.init_params(0), np.ones((3, 2)), np.ones(3))[0])") % str(target)
    env = {**os.environ, "PYTHONPATH": str(target), "NNCOMPILE_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) > 0
