"""scripts/sampler_vs_diffusers.py: a class-conditional run's exported network gets, inside diffusers' DDIMPipeline
(which passes no labels), the classes our sampler draws for the same seeds; an unconditional run's pipeline is left
as it is."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from tinyruns import write_run
from torchdiffusion.cond import seed_labels
from torchdiffusion.generate import load_run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import sampler_vs_diffusers  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="needs the bench extra (diffusers)"),
]
MNIST = ["data.source=mnist5k", "data.limit=48", "data.holdout=8", "model.channels=8", "sample.steps=3"]


def _pipe(run_folder, tmp_path):
    from torchdiffusion.interop.diffusers_out import load_pipeline
    from torchdiffusion.interop.export import export

    export(load_run(run_folder), "diffusers", tmp_path / "diffusers", progress=False)
    return load_pipeline(tmp_path / "diffusers", "ddim")


def test_the_pipeline_gets_the_runs_classes(tmp_path):
    from torchdiffusion.interop.diffusers_out import pipeline_samples

    folder = write_run(tmp_path / "cls", "digits-test", [*MNIST, "model.num_classes=10"], (1, 28, 28), jitter=0.2)
    plain = pipeline_samples(_pipe(folder, tmp_path / "a"), steps=3, batch=4, seed=0)  # no labels: the null class
    cycle = seed_labels(list(range(4)), 10, "cycle")
    labelled = sampler_vs_diffusers.pipe_with_labels(_pipe(folder, tmp_path / "b"), cycle)
    x = pipeline_samples(labelled, steps=3, batch=4, seed=0)
    assert not torch.allclose(x, plain, atol=1e-3)
    # the same classes given by hand through the network's own class_labels argument give the same samples
    pipe = _pipe(folder, tmp_path / "c")
    forward = pipe.unet.forward
    pipe.unet.forward = lambda sample, timestep, class_labels=None, return_dict=True: forward(
        sample, timestep, class_labels=cycle, return_dict=return_dict
    )
    assert torch.allclose(pipeline_samples(pipe, steps=3, batch=4, seed=0), x, atol=1e-6)
    assert sampler_vs_diffusers.pipe_with_labels(pipe, None) is pipe  # an unconditional run: left as it is


def test_the_report_names_the_classes_of_both_samplers(tmp_path):
    settings = [*MNIST, "model.num_classes=10", "sample.labels=cycle", "sample.sampler=ddim"]
    folder = write_run(tmp_path / "cls", "digits-test", settings, (1, 28, 28), jitter=0.2)
    out = tmp_path / "out"
    assert sampler_vs_diffusers.main([str(folder), "--out", str(out), "--n", "20", "--ddim-steps", "3"]) == 0
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [r["nfe"] for r in rows] == [3, 3] and all(r["setting"].endswith("classes cycle") for r in rows)
