"""Every advertised command-line path works end to end: options, presets, GIFs, stops, evaluation messages."""

import numpy as np
import pytest
from PIL import Image

from tinyruns import CLASS_RUN, td, write_run


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("class") / "run", *CLASS_RUN)


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.int16)


def test_guidance_interval_and_rescale_change_the_samples(class_run, tmp_path):
    base = ["sample", class_run, "--class", "3", "--guidance", "4", "--steps", "3", "--n", "4"]
    outs = {}
    for name, extra in {
        "plain": [],
        "rescale": ["--guidance-rescale", "0.7"],
        "interval": ["--guidance-interval", "0.5,2"],
    }.items():
        png = tmp_path / f"{name}.png"
        rc, _, err = td(*base, *extra, "--out", png)
        assert rc == 0, err
        outs[name] = _pixels(png)
    assert np.abs(outs["rescale"] - outs["plain"]).max() > 0
    assert np.abs(outs["interval"] - outs["plain"]).max() > 0
    rc, _, err = td(*base, "--guidance-rescale", "1.5", "--out", tmp_path / "bad.png")
    assert rc == 2 and "guidance_rescale" in err and "Traceback" not in err
    assert not (tmp_path / "bad.png").exists()
