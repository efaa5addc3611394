"""A corpus of bad inputs for every command: bad values, files of the wrong kind, paths of the wrong kind,
read-only and full file systems.

Each case must end with exit code 2 (bad input) or 3 (the system refused: disk full, read-only), exactly one
line on stderr naming the command (``torchdiffusion <command>: error: ...``), no traceback, and the files
around it byte-identical: nothing written, no temporary file left, earlier artefacts untouched.

Cases run in-process through ``torchdiffusion.cli.main`` (fast: they fail before any expensive work); a few run
as real subprocesses, and a few under torchrun. Runs are tiny folders written once per session.
"""

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyruns import CLASS_RUN, td, write_run
from torchdiffusion.cli import COMMANDS, EXIT_ENVIRONMENT, EXIT_USAGE, main

BIG = "1000000000000"  # 10**12 written out
HUGE = "1e30"

# Each case: (command line with {placeholders}, expected exit code, a word the error line must contain).
# {run} a class-conditional 8x8 run (T = 100); {bad}/<name> damaged copies of it; {ws} the shared folder of
# bad files; {ro} a read-only mount; {full} a full tmpfs; {cwd} the case's own (empty) working folder.
U, E = EXIT_USAGE, EXIT_ENVIRONMENT
_IV100 = ["--set", "sample.guidance_interval=100,200"]  # above sigma_max (80): at no level of the grid
_IV = ["--set", "sample.guidance_interval=1,100"]  # holds sigma 4.3 and 80 of CLASS_RUN's grid, not its tail
POSITIONAL = {
    **{c: ["{run}"] for c in ("sample", "inpaint", "outpaint", "img2img", "interpolate", "evaluate", "guidance-sweep")},
    "impute": ["{run}"],
    "train-classifier": ["{run}"],
    "explain": ["schedules"],
    "distill": ["{run}", "--method", "reflow", "--out", "{cwd}/student"],
    "export": ["{run}", "--format", "diffusers", "--out", "{cwd}/export"],
    "reproduce": ["{ws}/rand.bin"],
}

TRAIN_VALUES = [
    ("train.images=inf", "train.images"),
    ("train.images=nan", "train.images"),
    ("train.images=0", "train.images"),
    ("train.images=-5", "train.images"),
    ("train.images=1e30", "train.images"),
    ("train.images=1.5", "train.images"),
    ("train.batch_size=1e30", "train.batch_size"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.batch_size=-64", "train.batch_size"),
    ("train.grad_accum=0", "grad_accum"),
    ("train.grad_accum=3", "grad_accum"),
    ("train.lr=0", "train.lr"),
    ("train.lr=-1e-3", "train.lr"),
    ("train.lr=nan", "train.lr"),
    ("train.lr=inf", "train.lr"),
    ("train.lr=fast", "train.lr"),
    ("train.grad_clip=-1", "train.grad_clip"),
    ("train.grad_clip=nan", "train.grad_clip"),
    ("train.ema_halflife_images=-1", "train.ema_halflife_images"),
    ("train.ema_warmup_ratio=-0.1", "train.ema_warmup_ratio"),
    ("train.guide_at=1", "train.guide_at"),
    ("train.guide_at=-0.1", "train.guide_at"),
    ("train.guide_at=nan", "train.guide_at"),
    ("sample.autoguidance=-1", "sample.autoguidance"),
    ("sample.autoguidance=inf", "sample.autoguidance"),
    ("train.num_workers=-1", "train.num_workers"),
    ("train.num_workers=100000", "train.num_workers"),
    ("train.threads=-2", "train.threads"),
    ("train.cond_drop_prob=1.5", "cond_drop_prob"),
    ("train.precision=fp8", "train.precision"),
    ("train.lr_decay=step", "train.lr_decay"),
    ("train.balance=tokens", "train.balance"),
    ("data.seed=-1", "data.seed"),
    ("train.lr_cooldown=0", "train.lr_cooldown"),
    ("train.lr_cooldown=1.5", "train.lr_cooldown"),
    ("train.lr_cooldown=nan", "train.lr_cooldown"),
    ("train.betas=0.9,1.0", "train.betas"),
    ("train.weight_decay=-0.1", "train.weight_decay"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints"),
    ("train.max_nonfinite=0", "train.max_nonfinite"),
    ("train.seed=-1", "train.seed"),
    ("train.warmup_images=-1", "train.warmup_images"),
    ("train.log_every_images=-5", "train.log_every_images"),
    ("train.eval_n=1", "train.eval_n"),
    ("train.compile=maybe", "train.compile"),
    ("diffusion.beta_start=0", "beta_start"),
    ("diffusion.beta_start=-0.01", "beta_start"),
    ("diffusion.beta_end=1", "beta_end"),
    ("diffusion.beta_end=1.5", "beta_end"),
    ("diffusion.beta_start=0.5", "beta_start"),
    ("diffusion.beta_end=nan", "beta_end"),
    ("diffusion.T=1", "diffusion.T"),
    ("diffusion.T=1000000000", "diffusion.T"),
    ("diffusion.T=inf", "diffusion.T"),
    ("diffusion.sigma_data=0", "sigma_data"),
    ("diffusion.sigma_data=-0.5", "sigma_data"),
    ("diffusion.sigma_data=nan", "sigma_data"),
    ("diffusion.sigma_min=0", "sigma_min"),
    ("diffusion.sigma_max=inf", "sigma_max"),
    ("diffusion.P_std=0", "P_std"),
    ("diffusion.min_snr_gamma=0", "min_snr_gamma"),
    ("diffusion.schedule=quadratic", "diffusion.schedule"),
    ("diffusion.parameterization=score", "parameterization"),
    ("model.channels=0", "model.channels"),
    ("model.channels=-8", "model.channels"),
    ("model.channels=1e9", "model.channels"),
    ("model.channel_mult=0,1", "channel_mult"),
    ("model.channel_mult=", "channel_mult"),
    ("model.num_res_blocks=0", "num_res_blocks"),
    ("model.groups=0", "model.groups"),
    ("model.dropout=1", "model.dropout"),
    ("model.head_channels=0", "head_channels"),
    ("model.mlp_width=0", "mlp_width"),
    ("model.embedding=learned", "model.embedding"),
    ("model.num_classes=-1", "num_classes"),
    ("sample.rho=0", "sample.rho"),
    ("sample.rho=-7", "sample.rho"),
    ("sample.rho=nan", "sample.rho"),
    ("sample.steps=0", "sample.steps"),
    ("sample.steps=" + BIG, "sample.steps"),
    ("sample.n=0", "sample.n"),
    ("sample.settings.eta=nan", "sample.settings.eta"),
    ("sample.spacing=random", "sample.spacing"),
    ("sample.batch_size=0", "sample.batch_size"),
    ("sample.guidance=nan", "sample.guidance"),
    ("sample.guidance=inf", "sample.guidance"),
    ("sample.sampler=magic", "unknown sampler"),
    ("data.image_size=0,0", "data.image_size"),
    ("data.channels=2", "data.channels"),
    ("data.toy_size=0", "data.toy_size"),
    ("data.holdout=-1", "data.holdout"),
    ("data.limit=0", "data.limit"),
    ("data.source=mnist", "unknown data source 'mnist'"),
    ("data.toy=circles", "unknown toy 'circles'"),
    ("data.limit=", "data.limit= was given an empty value; write data.limit=none"),  # a script's unset variable
    ("nosection.x=1", "unknown config key"),
    ("train=1", "section"),
    ("train.lr", "section.key=value"),
]

FOLDER_DATA = ["--set", "data.source=folder", "--set", "data.path={ws}/pics"]  # a folder of 8x8 images

FASHION_EVAL = ["--set", "train.eval_every_images=64", "--set", "train.eval_classifier=fashion_mnist"]

# bench-samplers on the exact 8-Gaussians case with tuned grids only, no diffusers rows
BENCH_TINY = [
    "--batch-size",
    "2",
    "--windows",
    "1",
    "--steps",
    "1",
    "--warmup",
    "0",
    "--peak-size",
    "64",
    "--no-diffusers",
]
BENCH_UNREAD = ["train.precision=bf16", "train.lr=5", "sample.steps=3", "train.batch_size=4"]
TUNED_ONLY = ["bench-samplers", "--case", "8gaussians", "--no-diffusers", "--grids", "tuned", "--out", "{cwd}/b"]

CASES = [
    # -- the entry point and argparse -------------------------------------------------------------------------
    ([], U, "give a command"),
    (["nope"], U, "invalid choice"),
    *[([cmd, *POSITIONAL.get(cmd, []), "--no-such-flag"], U, "unrecognized arguments") for cmd in COMMANDS],
    # -- train: every config field out of its domain (refused before data is loaded) ------------------------
    *[(["train", "--preset", "digits-test", "--set", s, "--out", "{cwd}/run"], U, w) for s, w in TRAIN_VALUES],
    (["train", "--preset", "nope"], U, "unknown preset"),
    # a RePaint jump past the grid's end ran as the whole grid, recorded as given
    (["inpaint", "{run}", "--resample", "2", "--jump", "50", "--steps", "3"], U, "--jump 50 is longer than the 3"),
    # a sampling limit set by hand is named as the setting, not as a distillation that never ran
    (
        ["train", "--preset", "digits-test", "--set", "objective.max_steps=2", "--out", "{cwd}/r"],
        U,
        "objective.max_steps=2 limits sampling to at most 2 steps",
    ),
    # a listing flag reads nothing else on the line: what it would have ignored is refused
    (["train", "--list-presets", "--preset", "digits-test"], U, "--list-presets lists and exits"),
    (["train-autoencoder", "--list-presets", "--out", "{cwd}/ae"], U, "drop --out"),
    (["train-clip", "--list-presets", "--set", "train.steps=3"], U, "drop --set"),
    (["sample", "{run}", "--list-samplers"], U, "--list-samplers lists and exits"),
    (["sample", "--list-samplers", "--steps", "3"], U, "drop --steps"),
    (["reproduce", "{ws}/rand.bin"], U, "not a manifest"),
    (["reproduce", "{ws}/array.json"], U, "not a manifest"),
    (["card", "{ws}/missing"], U, "does not exist"),
    (["card", "{run}", "--out", "{ws}/file.txt"], U, "must end in .md"),
    (["card", "{run}", "--n", "50"], U, "add --evaluate"),
    (["card", "--data", "digits", "--evaluate", "--out", "{cwd}/c.md"], U, "--evaluate is for a model card"),
    (["card", "--data", "digits", "--license", "mit", "--out", "{cwd}/c.md"], U, "--license is for a model card"),
    (["impute", "{run}", "--resample", "3"], U, "--resample is read only for signal runs"),
    (["impute", "{run}", "--mask-char", "#"], U, "--mask-char is read only for sequence runs"),
    (["train", "--config", "{ws}/missing.json"], U, "does not exist"),
    (["train", "--config", "{ws}/folder.png"], U, "is a folder; give its config.json"),
    (["train", "--config", "{ws}/rand.bin", "--out", "{cwd}/run"], U, "config"),
    (["train", "--config", "{ws}/array.json", "--out", "{cwd}/run"], U, "object"),
    (["train", "--config", "{bad}/badvalue/config.json", "--out", "{cwd}/run"], U, "sample.rho"),
    (["train", "--preset", "digits-test", "--out", "{ws}/file.txt"], U, "file.txt"),
    (["train", "--preset", "digits-test", "--out", "{ws}/file.txt/run"], U, "file.txt"),
    (["train", "--preset", "digits-test", "--out", "{ro}/run"], E, "read-only"),
    (
        ["train", "--preset", "digits-test", "--set", "train.images=64", "--no-progress", "--out", "{full}/r"],
        E,
        "space",
    ),
    (["train", "--preset", "digits-test", "--set", "data.source=folder", "--set", "data.path={ws}/nope"], U, "nope"),
    (["train", "--preset", "digits-test", "--set", "data.source=array", "--set", "data.path={ws}/trunc.npy"], U, ""),
    (["train", "--preset", "digits-test", "--set", "data.source=array", "--set", "data.path={ws}/rand.bin"], U, ""),
    (["train", "--preset", "digits-test", "--set", "data.source=folder", "--set", "data.path={ws}/file.txt"], U, ""),
    # a run needs a folder of its own: not inside its image folder (its grids would become data), not a pipeline's
    (["train", "--preset", "digits-test", *FOLDER_DATA, "--out", "{ws}/pics/runs/new"], U, "is inside the data folder"),
    (["train", "--preset", "digits-test", *FOLDER_DATA, "--out", "{ws}/pics"], U, "is inside the data folder"),
    (["train-autoencoder", "--preset", "tiny-ae", *FOLDER_DATA, "--out", "{ws}/pics/ae"], U, "inside the data folder"),
    (["train", "--preset", "digits-test", "--out", "{ws}/pipeline"], U, "holds a diffusers pipeline"),
    (["train", "--preset", "digits-test", "--out", "{ws}/pipeline", "--no-resume"], U, "holds a diffusers pipeline"),
    (["distill", "{run}", "--method", "reflow", "--out", "{ws}/pipeline"], U, "holds a diffusers pipeline"),
    # -- sample -------------------------------------------------------------------------------------------------
    (["sample", "{run}", "--steps", "0"], U, "--steps"),
    (["sample", "{run}", "--steps", "-3"], U, "--steps"),
    (["sample", "{run}", "--steps", BIG], U, "--steps"),
    (["sample", "{run}", "--steps", "10**12"], U, "--steps"),
    (["sample", "{run}", "--steps", "x"], U, "--steps"),
    (["sample", "{run}", "--n", "0"], U, "--n"),
    (["sample", "{run}", "--n", "-1"], U, "--n"),
    (["sample", "{run}", "--n", BIG], U, "--n"),
    (["sample", "{run}", "--rho", "0"], U, "--rho"),
    (["sample", "{run}", "--rho", "nan"], U, "--rho"),
    (["sample", "{run}", "--rho", "-7"], U, "--rho"),
    (["sample", "{run}", "--eta", "nan"], U, "eta"),
    (["sample", "{run}", "--eta", "-2"], U, "eta"),
    (["sample", "{run}", "--seed", "-1"], U, "--seed"),
    (["sample", "{run}", "--batch-size", "0"], U, "--batch-size"),
    (["sample", "{run}", "--batch-size", HUGE], U, "--batch-size"),
    (["sample", "{run}", "--guidance", "nan"], U, "--guidance"),
    (["sample", "{run}", "--guidance", "inf"], U, "--guidance"),
    (["sample", "{run}", "--guidance-rescale", "1.5"], U, "guidance_rescale"),
    (["sample", "{run}", "--guidance-rescale", "nan"], U, "guidance_rescale"),
    (["sample", "{run}", "--guidance-interval", "0.1,5;7,9"], U, "--guidance-interval takes two sigmas LO,HI"),
    (["sample", "{run}", "--guidance-interval", "0.1"], U, "--guidance-interval takes two sigmas LO,HI"),
    # an output (or the settings .json, GIF or .npy written beside it) that would replace a file a run folder,
    # an autoencoder's or a contrastive model's folder is made of
    (["sample", "{run}", "--out", "{run}/run.png"], U, "would replace run.json of the run folder"),
    (["sample", "{run}", "--out", "{run}/config.png", "--gif"], U, "would replace config.json of the run folder"),
    (["sample", "{run}", "--out", "{ws}/ae/autoencoder.png"], U, "would replace autoencoder.json"),
    (["sample", "{run}", "--out", "{ws}/ae/reconstructions.png"], U, "would replace reconstructions.png"),
    (["sample", "{run}", "--out", "{ws}/tuned/grids/dpmpp_2m-nfe4.png"], U, "would replace grids/dpmpp_2m-nfe4.json"),
    # a name too long for the manifest beside it: refused before the work (it failed after it, naming a temporary)
    (["sample", "{run}", "--out", "{ws}/" + "a" * 240 + ".png"], U, "is too long by"),
    (["explain", "schedules", "--out", "{ws}/" + "b" * 245 + ".png"], U, "is too long by"),
    # an output under a symbolic link to nothing: refused before the work (it failed after it, "already exists")
    (["sample", "{run}", "--out", "{ws}/dangling/x.png"], U, "is a symbolic link to"),
    (["train", "--preset", "digits-test", "--out", "{ws}/dangling"], U, "which does not exist"),
    (["evaluate", "{run}", "--metrics", "fd", "--n", "8", "--out", "{ws}/dangling"], U, "is a symbolic link to"),
    # a settings record beside the weights of that name (refused only the second time, once it was there)
    (["sample", "{run}", "--out", "{run}/model.png"], U, "would pass for the record of model.safetensors"),
    # the files written beside a named output replace only a command's earlier outputs, never the user's own
    (["sample", "{run}", "--out", "{ws}/array.png"], U, "would replace a file no torchdiffusion command wrote"),
    (["sample", "{run}", "--out", "{ws}/trunc.png", "--save-npy"], U, "trunc.npy (beside"),
    (["sample", "{run}", "--classifier-scale", "nan"], U, "--classifier-scale"),
    # guidance scales beyond float32's reach (1e39 overflowed into a traceback): bounded to [0, 100] everywhere
    (["sample", "{run}", "--guidance", "1e39"], U, "--guidance: must be a finite number in [0, 100]"),
    (["sample", "{run}", "--set", "sample.guidance=1e39"], U, "sample.guidance must be in [0, 100]"),
    (["img2img", "{run}", "--set", "sample.guidance=-1"], U, "sample.guidance must be in [0, 100]"),
    (["guidance-sweep", "{run}", "--scales", "1,1e39"], U, "--scales must be numbers in [0, 100]"),
    (["guidance-sweep", "{run}", "--scales", "1,,2"], U, "got '1,,2'"),  # an empty scale is refused, not dropped
    (["sample", "{run}", "--class", "3", "--labels", "random"], U, "--labels chooses classes for images sampled"),
    # the learned null class alone: CFG's two branches are one, so the scale changed nothing (and was recorded)
    (["sample", "{run}", "--labels", "none", "--guidance", "5"], U, "--guidance changes nothing: these samples"),
    # an empty value (a script's unset variable) is refused, not taken as the default
    (["sample", "{run}", "--class", ""], U, "--class was given an empty value"),
    (["sample", "{run}", "--out", ""], U, "--out was given an empty value"),
    (["evaluate", "{run}", "--out", " "], U, "--out was given an empty value"),
    (["sample", "{run}", "--sampler", "ddim", "--eta", ""], U, "--eta was given an empty value"),
    (["sample", "{run}", "--set", "sample.settings.eta="], U, "sample.settings.eta= was given an empty value"),
    (["evaluate", "{run}", "--metrics", "fd", "--nll-n", "5"], U, "--nll-n is read by --metrics nll; add one"),
    (["evaluate", "{run}", "--metrics", "fd", "--ode-steps", "5"], U, "--ode-steps is read by --metrics nll or"),
    (["evaluate", "{run}", "--metrics", "fd", "--vlb-timesteps", "7"], U, "--vlb-timesteps is read by --metrics nll;"),
    (["card", "{run}", "--license", "x: y"], U, "is not a licence id"),
    (["card", "{run}", "--license", "a\nb"], U, "is not a licence id"),
    (["bench-samplers", "--case", ",", "--no-diffusers", "--out", "{cwd}/b"], U, "--case names no case"),
    (["bench-samplers", "--case", "8gaussians", "--samplers", ",", "--out", "{cwd}/b"], U, "--samplers names no"),
    (["img2img", "{run}", "--images", "{ws}/pics/0.png", "--n", "5"], U, "--n picks examples of the run's data"),
    (["inpaint", "{run}", "--images", "{ws}/pics/0.png", "--n", "5"], U, "--n picks examples of the run's data"),
    (["inpaint", "{run}", "--index", "0", "--n", "9000"], U, "--index/--n ask for examples 0 to 8999"),
    (["interpolate", "{run}", "--data-index", "0", "90000"], U, "--data-index select no images"),
    (["inpaint", "{run}", "--mask", "box:nan,0,1,1"], U, "box mask needs four numbers"),
    # symbols (categorical process) train with the denoising objective only: consistency needs Gaussian noise
    (
        ["train", "--preset", "text-chars", "--objective", "consistency", "--out", "{cwd}/r"],
        U,
        "diffusion.process=categorical (sequences of symbols) trains with objective.name=denoising",
    ),
    # the networks that carry their own process: sequences are categorical, a table's numeric columns continuous
    (
        ["train", "--preset", "text-chars", "--objective", "rectified_flow", "--out", "{cwd}/r"],
        U,
        "model.net=transformer (sequences of symbols) goes with diffusion.process=categorical",
    ),
    (
        [
            "train",
            "--preset",
            "digits-test",
            "--set",
            "diffusion.process=categorical",
            "--set",
            "diffusion.sigma_sampling=uniform",
            "--out",
            "{cwd}/r",
        ],
        U,
        "this run has model.net=unet and diffusion.process=categorical",
    ),
    (
        [
            "train",
            "--preset",
            "table-iris",
            "--set",
            "diffusion.process=discrete",
            "--set",
            "diffusion.sigma_sampling=discrete",
            "--out",
            "{cwd}/r",
        ],
        U,
        "it needs diffusion.process=continuous",
    ),
    (["train", "--preset", "table-iris", "--set", "diffusion.parameterization=eps"], U, "changes nothing"),
    (["train", "--preset", "text-chars", "--set", "diffusion.weighting=min_snr"], U, "changes nothing"),
    (["train", "--preset", "digits-test", "--set", "train.num_workers=4"], U, "train.num_workers is read by nothing"),
    (["train", "--preset", "toy-2d", "--set", "train.channels_last=true"], U, "read only by the image networks"),
    # a U-Net level of 1 x 1 with one channel per group: GroupNorm of a single value (0/0)
    (
        [
            "train",
            "--preset",
            "digits-test",
            "--set",
            "model.channels=4",
            "--set",
            "model.channel_mult=1,1,1,1",
            "--out",
            "{cwd}/r",
        ],
        U,
        "would normalise one value per GroupNorm group",
    ),
    # a draw that went NaN: refused before any picture or .npy is written
    (
        ["sample", "{run}", "--sampler", "langevin", "--step-lr", "1e6", "--save-npy", "--out", "{cwd}/g.png"],
        U,
        "the samples became NaN or infinite",
    ),
    (["sample", "{run}", "--classifier-scale", "2"], U, "add --classifier"),  # read by nothing: refused
    (["sample", "{run}", "--grid", "uniform_t", "--rho", "3"], U, "--rho shapes the karras grid"),
    (["sample", "{run}", "--grid", "karras", "--spacing", "trailing"], U, "--spacing places the uniform_t"),
    (["inpaint", "{run}", "--grid", "exponential", "--rho", "3"], U, "--rho shapes the karras grid"),
    (["sample", "{run}", "--sampler", "magic"], U, "unknown sampler"),
    (["sample", "{run}", "--grid", "nope"], U, "sample.grid"),
    (["sample", "{run}", "--spacing", "nope"], U, "spacing"),
    (["sample", "{run}", "--weights", "best"], U, "--weights"),
    (["sample", "{run}", "--out", "{cwd}/x.jpg"], U, ".png"),
    (["sample", "{run}", "--out", "{ws}/folder.png"], U, "folder.png"),
    (["sample", "{run}", "--out", "{ws}/file.txt/x.png"], U, "file.txt"),
    (["sample", "{run}", "--out", "{ro}/x.png"], E, "read-only"),
    (["sample", "{run}", "--out", "/proc/torchdiffusion-x.png"], E, "/proc"),
    (["sample", "{run}", "--n", "2", "--steps", "1", "--out", "{full}/x.png"], E, "space"),
    (["sample", "{run}", "--n", "2", "--steps", "1", "--gif", "--out", "{full}/x.png"], E, "space"),
    (["sample", "{run}", "--class", "99"], U, "class"),
    # at guidance 1 the negative is never read (D_u + 1 (D_c - D_u) = D_c): refused, not sampled at twice the cost
    (["sample", "{ws}/context-run", "--context", "1,0,0", "--negative-context", "0,1,0"], U, "changes nothing at guid"),
    # a guidance interval above sigma_max (80) guides at no level of the grid: it would change nothing
    (["sample", "{run}", "--class", "3", "--guidance", "3", "--guidance-interval", "100,200"], U, "holds no noise"),
    (["guidance-sweep", "{run}", "--set", "sample.guidance_interval=100,200"], U, "holds no noise level of the grid"),
    # the editing commands judge it on the grid they walk: img2img at strength 0.3 walks sigma 0.025 to 0 alone
    (
        ["img2img", "{run}", "--class", "3", "--set", "sample.guidance=3", *_IV, "--strength", "0.3"],
        U,
        "at --strength 0.3",
    ),
    (
        ["inpaint", "{run}", "--class", "3", "--set", "sample.guidance=3", "--set", "sample.guidance_interval=100,200"],
        U,
        "holds no noise level of the grid",
    ),
    # every command that samples judges it the same way: evaluate's report and explain's picture would record
    # guidance never applied
    (["evaluate", "{run}", "--metrics", "fd", "--n", "4", "--guidance", "2", *_IV100], U, "holds no noise level of"),
    (
        ["explain", "trajectory", "{run}", "--set", "sample.labels=cycle", "--set", "sample.guidance=2", *_IV100],
        U,
        "holds no noise level of the grid",
    ),
    (["guidance-sweep", "{run}", "--scales", "1", "--set", "sample.guidance_rescale=0.5"], U, "changes nothing"),
    # the network takes 10 classes, its data held 0-2: an embedding no example trained is refused, not sampled
    (["sample", "{ws}/few-classes", "--class", "1,4"], U, "no training example had that class; the data of"),
    (["inpaint", "{ws}/few-classes", "--class", "7", "--steps", "3"], U, "hold classes 0-2 (of the network's 10)"),
    (["sample", "{run}", "--class", "x"], U, "'x'"),
    (["sample", "{run}", "--class", "1.5"], U, "not a whole number"),  # not class 1
    (["sample", "{run}", "--class", "inf"], U, "not a whole number"),
    (["sample", "{run}", "--class", "1;2"], U, "not a whole number"),
    (["sample", "{run}", "--class", "1,,2"], U, "whole numbers"),
    (["inpaint", "{run}", "--class", "1e999"], U, "not a whole number"),
    (["img2img", "{run}", "--class", "2.0"], U, "not a whole number"),
    (["sample", "{run}", "--context", "1,0"], U, "context"),
    (["sample", "{run}", "--classifier", "{ws}/missing.safetensors", "--class", "1"], U, "missing"),
    (["sample", "{run}", "--classifier", "{ws}/rand.safetensors", "--class", "1"], U, "rand.safetensors"),
    (["sample", "{run}", "--classifier", "{ws}/pickle.safetensors", "--class", "1"], U, "pickle.safetensors"),
    (["sample"], U, "run folder"),
    (["sample", "{ws}/missing"], U, "does not exist"),
    (["sample", "{ws}/file.txt"], U, "is a file, not a run folder"),
    (["distill", "{bad}/badjson", "--method", "progressive", "--out", "{cwd}/student"], U, "damaged"),
    (["distill", "{run}", "--method", "shortcut", "--out", "{cwd}/student"], U, "--method"),
    (["distill", "{run}", "--method", "reflow", "--steps", "0", "--out", "{cwd}/student"], U, "--steps"),
    (["sample", "{bad}/noconfig"], U, "config.json"),
    (["sample", "{bad}/badjson"], U, "damaged"),
    (["sample", "{bad}/jsonarray"], U, "damaged"),
    (["sample", "{bad}/badvalue"], U, "sample.rho"),
    (["sample", "{bad}/nanvalue"], U, "sample.rho"),
    (["sample", "{bad}/randweights"], U, "ema.safetensors"),
    (["sample", "{bad}/pickleweights"], U, "ema.safetensors"),
    (["sample", "{bad}/truncweights"], U, "ema.safetensors"),
    (["sample", "{bad}/emptyweights"], U, "ema.safetensors"),
    (["sample", "{bad}/randweights", "--weights", "model"], U, "model.safetensors"),
    (["sample", "{bad}/noweights"], U, "no trained weights"),
    (["sample", "{bad}/noema"], U, "ema.safetensors is missing, though run.json records it"),
    (["sample", "{bad}/wrongnet"], U, "does not match"),
    (["sample", "{bad}/norunjson"], U, "run.json"),
    (["sample", "{bad}/badrunjson"], U, "run.json"),
    # -- demo: the grid size is checked before training ---------------------------------------------------------
    (["demo", "--n", "0"], U, "--n"),
    (["demo", "--n", "-4"], U, "--n"),
    (["demo", "--n", "x"], U, "--n"),
    (["demo", "--n", BIG], U, "--n"),
    (["demo", "--preset", "nope"], U, "unknown preset"),
    (["demo", "--preset", "digits-test", "--set", "train.images=inf", "--out", "{cwd}/d"], U, "train.images"),
    (["demo", "--preset", "digits-test", "--out", "{ws}/file.txt"], U, "file.txt"),
    (["demo", "--preset", "digits-test", "--out", "{ro}/d"], E, "read-only"),
    (["demo", "--preset", "digits-test", "--set", "train.images=64", "--no-progress", "--out", "{full}/d"], E, "space"),
    # -- inpaint / outpaint / img2img / interpolate -----------------------------------------------------------
    (["inpaint", "{run}", "--mask", "nope"], U, "mask"),
    (["inpaint", "{run}", "--mask", "box:0,0,0,0"], U, "box"),
    (["inpaint", "{run}", "--mask", "{ws}/missing.png"], U, "missing.png"),
    (["inpaint", "{run}", "--mask", "{ws}/rand.png"], U, "rand.png"),
    (["inpaint", "{run}", "--images", "{ws}/missing.png"], U, "missing.png"),
    (["inpaint", "{run}", "--jump", "3"], U, "needs --resample 2"),  # options nothing would read
    (["inpaint", "{run}", "--pseudoinverse-sigma-max", "3"], U, "add --pseudoinverse"),
    (["img2img", "{run}", "--images", "{ws}/missing.png", "--index", "3"], U, "with --images the files"),
    (["outpaint", "{run}", "--right", "4", "--jump", "2"], U, "needs --resample 2"),
    (["outpaint", "{run}", "--right", "4", "--samples", "4"], U, "outpainting an image does not read it"),
    (["outpaint", "{run}", "--right", "4", "--cut", "2"], U, "outpainting an image does not read it"),
    (["outpaint", "{ws}/toy", "--right", "4", "--samples", "4"], U, "grows images and forecasts signals; "),
    (["inpaint", "{run}", "--images", "{ws}/folder.png"], U, "folder.png"),
    (["inpaint", "{run}", "--images", "{ws}/rand.png"], U, "rand.png"),
    (["inpaint", "{run}", "--images", "{ws}/file.txt"], U, "file.txt"),
    (["inpaint", "{run}", "--index", "-1"], U, "--index"),
    (["inpaint", "{run}", "--index", "100000"], U, "--index"),
    (["inpaint", "{run}", "--resample", "0"], U, "--resample"),
    (["inpaint", "{run}", "--jump", "0"], U, "--jump"),
    (["inpaint", "{run}", "--steps", "0"], U, "--steps"),
    (["inpaint", "{run}", "--n", "0"], U, "--n"),
    (["inpaint", "{run}", "--out", "{cwd}/a.jpg"], U, ".png"),
    (["inpaint", "{run}", "--out", "{ws}/folder.png"], U, "folder.png"),
    # settings the edit never reads: guidance without a class, the batch and count of its own inputs
    (["inpaint", "{run}", "--n", "2", "--set", "sample.guidance=5", "--out", "{cwd}/e.png"], U, "without --class"),
    (["img2img", "{run}", "--n", "2", "--batch-size", "1", "--out", "{cwd}/e.png"], U, "unrecognized arguments"),
    (["inpaint", "{run}", "--set", "sample.batch_size=1", "--out", "{cwd}/e.png"], U, "editing every image in one"),
    (
        ["outpaint", "{run}", "--right", "2", "--set", "sample.n=2", "--out", "{cwd}/e.png"],
        U,
        "outpaint sets it by --n",
    ),
    (["interpolate", "{run}", "--set", "sample.guidance=5", "--out", "{cwd}/e.png"], U, "without --class the edit"),
    (["inpaint", "{run}", "--out", "{ro}/a.png"], E, "read-only"),
    (["inpaint", "{run}", "--n", "1", "--steps", "1", "--out", "{full}/a.png"], E, "space"),
    (["inpaint", "{bad}/randweights"], U, "ema.safetensors"),
    (["outpaint", "{run}", "--left", "-1"], U, "--left"),
    (["outpaint", "{run}", "--right", BIG], U, "--right"),
    (["outpaint", "{run}", "--stride", "0"], U, "--stride"),
    (["outpaint", "{run}", "--resample", "0"], U, "--resample"),
    (["outpaint", "{run}", "--left", "2", "--out", "{ws}/file.txt/a.png"], U, "file.txt"),
    (["img2img", "{run}", "--strength", "1.5"], U, "--strength"),
    (["img2img", "{run}", "--strength", "-0.1"], U, "--strength"),
    (["img2img", "{run}", "--strength", "nan"], U, "--strength"),
    (["img2img", "{run}", "--images", "{ws}/missing.png"], U, "missing.png"),
    (["interpolate", "{run}", "--frames", "1"], U, "--frames"),
    (["interpolate", "{run}", "--frames", "0"], U, "--frames"),
    (["interpolate", "{run}", "--frames", "100000000000"], U, "--frames"),
    (["interpolate", "{run}", "--frames", "10**11"], U, "--frames"),
    (["interpolate", "{run}", "--seeds", "-1", "0"], U, "--seeds"),
    (["interpolate", "{run}", "--n", "5"], U, "--n changes nothing in interpolate"),
    (["interpolate", "{run}", "--seed", "5"], U, "--seed changes nothing in interpolate"),
    (["interpolate", "{run}", "--sampler", "heun"], U, "--sampler changes nothing in interpolate"),
    (["interpolate", "{run}", "--set", "sample.sampler=heun"], U, "changes nothing in interpolate"),
    (["interpolate", "{run}", "--set", "sample.settings.eta=0.5"], U, "is a sampler setting"),
    (["interpolate", "{run}", "--set", "sample.n=5"], U, "--frames sets"),
    (["interpolate", "{run}", "--eta", "0.5"], U, "--eta is a sampler setting"),
    (["interpolate", "{run}", "--data-index", "0", "100000"], U, "index"),
    (["interpolate", "{run}", "--images", "{ws}/missing.png", "{ws}/rand.png"], U, "missing.png"),
    (["interpolate", "{run}", "--method", "nope"], U, "--method"),
    (["interpolate", "{run}", "--out", "{ws}/folder.png"], U, "folder.png"),
    # -- explain ------------------------------------------------------------------------------------------------
    (["explain", "nope"], U, "invalid choice"),
    (["distill", "{run}", "--method", "reflow", "--levels", "20", "--out", "{cwd}/s"], U, "option of --method consis"),
    (["train-classifier", "{run}", "--epochs", "3", "--out", "{cwd}/c"], U, "--epochs sets the passes of --evaluation"),
    (["distill", "{run}", "--method", "dmd", "--pairs", "64", "--out", "{cwd}/s"], U, "option of --method reflow"),
    (["explain", "schedules", "--steps", "3", "--out", "{cwd}/s.png"], U, "does not read --steps"),  # read by none
    (["explain", "schedules", "{run}", "--out", "{cwd}/s.png"], U, "reads no run folder"),
    (["explain", "trajectory", "{run}", "--T", "50"], U, "does not read --T"),
    (["explain", "field", "{run}", "--sampler", "heun"], U, "does not read --sampler"),
    (["explain", "trajectory", "{run}", "--batch-size", "2"], U, "does not read --batch-size"),  # one batch
    # an unread option given its default value is refused like any other value of it
    (["explain", "forward", "{run}", "--data", "mnist5k", "--out", "{cwd}/f.png"], U, "--data is drawn without a"),
    (["explain", "schedules", "--t", "0", "50", "100", "200", "300", "500", "700", "999"], U, "does not read --t"),
    (["explain", "trajectory", "{run}", "--T", "1000"], U, "does not read --T"),
    (["explain", "ablation", "{run}", "--set", "sample.batch_size=2"], U, "draws its images in one batch"),
    # guidance of images drawn with the null conditioning alone: D_u + w (D_u - D_u) = D_u
    (["explain", "trajectory", "{run}", "--set", "sample.labels=none", "--set", "sample.guidance=3"], U, "guide"),
    (["explain", "ablation", "{run}", "--set", "sample.labels=none", "--set", "sample.guidance=2"], U, "(sample.label"),
    (["explain", "trajectory", "{ws}/context-run", "--set", "sample.guidance=3"], U, "without one"),
    (["explain", "forward", "{run}", "--data", "fashion_mnist"], U, "--data is drawn without a run"),
    (["explain", "schedules", "--T", "1", "--out", "{cwd}/s.png"], U, "--T"),
    (["explain", "schedules", "--T", BIG, "--out", "{cwd}/s.png"], U, "--T"),
    (["explain", "schedules", "--schedules", "quadratic", "--out", "{cwd}/s.png"], U, "quadratic"),
    (["explain", "schedules", "--out", "{cwd}/s.jpg"], U, ".png"),
    (["explain", "schedules", "--out", "{ws}/folder.png"], U, "folder.png"),
    (["explain", "schedules", "--out", "{ro}/s.png"], E, "read-only"),
    (["explain", "schedules", "--out", "{full}/s.png"], E, "space"),
    (["explain", "forward", "{run}", "--t", "-1", "--out", "{cwd}/f.png"], U, "--t"),
    (["explain", "forward", "{run}", "--t", "0", "5000", "--out", "{cwd}/f.png"], U, "5000"),
    (["explain", "forward", "{run}", "--images", "0", "--out", "{cwd}/f.png"], U, "--images"),
    (["explain", "field", "{run}", "--sigmas", "0", "--out", "{cwd}/f.png"], U, "--sigmas"),
    (
        ["explain", "volume-forward", "--data", "shapes3d", "--sigmas", "0", "1", "--out", "{cwd}/f.png"],
        U,
        "--sigmas 0: ",
    ),
    (["explain", "field", "{run}", "--sigmas", "nan", "--out", "{cwd}/f.png"], U, "--sigmas"),
    (["explain", "field", "{run}", "--lim", "-1", "--out", "{cwd}/f.png"], U, "--lim"),
    (["explain", "field", "{run}", "--lim", "1e308", "--out", "{cwd}/f.png"], U, "--lim"),  # a blank picture
    (["explain", "volume-forward", "--data", "shapes3d", "--sigmas", "1e200", "--out", "{cwd}/f.png"], U, "--sigmas"),
    # a file written beside the picture, or its manifest, blocked by a folder: refused before the work
    (["explain", "trajectory", "{run}", "--steps", "2", "--out", "{ws}/side.png"], U, "side.mp4"),
    (["explain", "schedules", "--out", "{ws}/man.png"], U, "man.png.manifest.json"),
    (["sample", "{run}", "--n", "2", "--steps", "2", "--out", "{ws}/notes.png"], U, "which is no manifest"),
    (["explain", "loss", "{run}/config.json", "--out", "{cwd}/l.png"], U, "is not a training run's metrics.jsonl"),
    (["explain", "field", "{run}", "--out", "{cwd}/f.png"], U, "2-D"),
    (["explain", "ablation", "{run}", "--ddpm-steps", "0", "--out", "{cwd}/f.png"], U, "--ddpm-steps"),
    (["explain", "trajectory"], U, "run folder"),
    (["explain", "loss", "{ws}/missing"], U, "does not exist"),
    (["explain", "trajectory", "{bad}/pickleweights"], U, "ema.safetensors"),
    # -- evaluate: every argument checked before sampling -------------------------------------------------------
    (["evaluate", "{run}", "--metrics", ""], U, "--metrics"),
    (["evaluate", "{run}", "--metrics", ","], U, "--metrics"),
    (["evaluate", "{run}", "--metrics", "fid"], U, "fid"),
    (["evaluate", "{run}", "--features", "nope"], U, "nope"),
    (["evaluate", "{run}", "--features", ""], U, "--features"),
    (["evaluate", "{run}", "--features", "inception"], U, "inception"),
    (["evaluate", "{run}", "--features", "inception", "--inception", "{ws}/missing.pt"], U, "missing.pt"),
    (["evaluate", "{run}", "--features", "inception", "--inception", "{ws}/rand.bin"], U, "rand.bin"),
    (["evaluate", "{run}", "--features", "inception", "--inception", "{ws}/folder.png"], U, "folder.png"),
    (["evaluate", "{run}", "--metrics", "nll", "--vlb-timesteps", "100"], U, "--vlb-timesteps"),
    (["evaluate", "{run}", "--metrics", "nll", "--vlb-timesteps", "-1"], U, "--vlb-timesteps"),
    (["evaluate", "{run}", "--n", "1"], U, "--n"),
    (["evaluate", "{run}", "--n", "0"], U, "--n"),
    (["evaluate", "{run}", "--n", BIG], U, "--n"),
    (["evaluate", "{run}", "--nll-n", "0"], U, "--nll-n"),
    (["evaluate", "{run}", "--ode-steps", "0"], U, "--ode-steps"),
    (["evaluate", "{run}", "--batch-size", "0"], U, "--batch-size"),
    (["evaluate", "{run}", "--seed", "-1"], U, "--seed"),
    (["evaluate", "{run}", "--steps", "0"], U, "--steps"),
    (["evaluate", "{run}", "--threads", "-1"], U, "--threads"),
    (["evaluate", "{run}", "--device", "tpu"], U, "--device"),
    (["evaluate", "{run}", "--metrics", "memorisation", "--n", "2", "--out", "{ws}/file.txt"], U, "file.txt"),
    (["evaluate", "{run}", "--metrics", "memorisation", "--n", "2", "--out", "{ro}/eval"], E, "read-only"),
    (["evaluate", "{run}", "--metrics", "memorisation", "--n", "2", "--out", "/proc/torchdiffusion/eval"], E, "/proc"),
    (["evaluate", "{run}", "--metrics", "memorisation", "--n", "2", "--out", "{full}/eval"], E, "space"),
    (["evaluate", "{ws}/missing"], U, "does not exist"),
    (["evaluate", "{run}", "--n", "2", "--out", "{ws}/clip"], U, "would replace report.json of the run folder"),
    (["evaluate", "{run}", "--n", "2", "--out", "{ws}/mine"], U, "would replace a file no torchdiffusion command"),
    (["evaluate", "{bad}/truncweights", "--metrics", "memorisation"], U, "ema.safetensors"),
    # -- bench-train --------------------------------------------------------------------------------------------
    (["bench-train", "--shape", "1,28"], U, "--shape"),
    (["bench-train", "--shape", "0,28,28"], U, "--shape"),
    (["bench-train", "--shape", "x,y,z"], U, "--shape"),
    (["bench-train", "--shape", "1,100000,100000"], U, "--shape"),
    (["bench-train", "--batch-size", "-1"], U, "--batch-size"),
    (["bench-train", "--batch-size", "0"], U, "--batch-size"),  # not "the preset's", silently
    (["bench-train", "--batch-size", HUGE], U, "--batch-size"),
    (["bench-train", "--warmup", "-1"], U, "--warmup"),
    (["bench-train", "--windows", "0"], U, "--windows"),
    (["bench-train", "--steps", "0"], U, "--steps"),
    (["bench-train", "--steps", BIG], U, "--steps"),
    (["bench-train", "--threads", "-1"], U, "--threads"),
    (["bench-train", "--peak-size", "0"], U, "--peak-size"),
    (["bench-train", "--precisions", "fp8"], U, "--precisions"),
    (["bench-train", "--layouts", "nchw"], U, "--layouts"),
    # a --set bench-train never reads (it times model.* alone; train.batch_size only without --batch-size)
    *[(["bench-train", "--set", s, *BENCH_TINY], U, "changes nothing") for s in BENCH_UNREAD],
    (["bench-train", "--precisions", "fp32,fp32"], U, "--precisions names 'fp32' twice"),
    (["bench-train", "--layouts", "contiguous,contiguous"], U, "--layouts names 'contiguous' twice"),
    (["bench-train", "--preset", "nope"], U, "unknown preset"),
    (["bench-train", "--set", "model.channels=0"], U, "model.channels"),
    (["bench-train", "--set", "train.batch_size=inf"], U, "train.batch_size"),
    (["bench-train", "--out", "{ws}/folder.png"], U, "folder.png"),
    (["bench-train", "--out", "{ws}/file.txt/r.json"], U, "file.txt"),
    (["bench-train", "--out", "{ro}/r.json"], E, "read-only"),
    (["bench-train", "--out", "/proc/torchdiffusion-r.json"], E, "/proc"),  # a folder that takes no new files
    (["bench-train", "--out", "{run}/run.json"], U, "would replace run.json of the run folder"),
    (["bench-train", "--out", "{ws}/ae/autoencoder.json"], U, "would replace autoencoder.json"),
    (["bench-train", "--out", "{ws}/clip/contrastive.safetensors"], U, "would replace contrastive.safetensors"),
    # -- studio (refused before the server starts) ---------------------------------------------------------------
    (["studio", "{ws}/missing"], U, "does not exist"),
    (["studio", "{ws}/folder.png", "--port", "70000"], U, "--port"),
    (["studio", "{ws}/folder.png", "--port", "x"], U, "--port"),
    (["studio", "{ws}/file.txt"], U, "file.txt is a file, not a folder"),
    (
        ["studio", "{ws}/folder.png", "--check", "--port", "18650", "--host", "0.0.0.0", "--allow-train"],
        U,
        "--port, --host, --allow-train change nothing with --check",
    ),  # fmt: skip
    (["studio", "{ws}/folder.png", "--check", "--port", "8765"], U, "--port changes nothing with --check"),
    # -- bench-samplers -----------------------------------------------------------------------------------------
    (["bench-samplers", "--n", "1"], U, "--n"),
    (["bench-samplers", "--n", "0"], U, "--n"),
    (["bench-samplers", "--n", BIG], U, "--n"),
    (["bench-samplers", "--nfe", "0"], U, "--nfe"),
    (["bench-samplers", "--nfe", "x"], U, "--nfe"),
    (["bench-samplers", "--nfe", ""], U, "--nfe"),
    (["bench-samplers", "--nfe", BIG], U, "--nfe"),
    (["bench-samplers", "--samplers", "magic"], U, "magic"),
    (["bench-samplers", "--tuned-samplers", "magic"], U, "magic"),
    (["bench-samplers", "--grids", "nope"], U, "nope"),
    (["bench-samplers", "--grids", ","], U, "--grids needs at least one"),
    (["bench-samplers", "--grids", ""], U, "--grids was given an empty value"),
    (["bench-samplers", "--diffusers", "nope"], U, "nope"),
    (["bench-samplers", "--tune-maxfev", "0"], U, "--tune-maxfev"),
    (["bench-samplers", "--fit-n", "0"], U, "--fit-n"),
    (["bench-samplers", "--ref-steps", "0"], U, "--ref-steps"),
    (["bench-samplers", "--threads", "-1"], U, "--threads"),
    (["bench-samplers", "--case", "nope", "--out", "{cwd}/b"], U, "nope"),
    (["bench-samplers", "--run", "{run}", "--features", "nope", "--out", "{cwd}/b"], U, "nope"),
    (["bench-samplers", "--run", "{run}", "--case", "8gaussians"], U, "not allowed"),
    (["bench-samplers", "--case", "8gaussians", "--nfe", "5,05", "--out", "{cwd}/b"], U, "--nfe names 5 twice"),
    (["bench-samplers", "--case", "8gaussians,8gaussians", "--out", "{cwd}/b"], U, "--case names '8gaussians' twice"),
    (["bench-samplers", "--case", "8gaussians", "--samplers", "euler,euler", "--out", "{cwd}/b"], U, "'euler' twice"),
    (["bench-samplers", "--case", "8gaussians", "--grids", "karras,karras", "--out", "{cwd}/b"], U, "'karras' twice"),
    (["bench-samplers", "--case", "8gaussians", "--samplers", "euler,adaptive", "--out", "{cwd}/b"], U, "own rows"),
    (["bench-samplers", "--run", "{ws}/toy", "--features", "clf:mnist5k", "--out", "{cwd}/b"], U, "reads images"),
    # options nothing in this benchmark reads
    (["bench-samplers", "--case", "8gaussians", "--ref-steps", "10", "--out", "{cwd}/b"], U, "--ref-steps changes"),
    (["bench-samplers", "--run", "{run}", "--reference", "data", "--ref-steps", "5"], U, "--ref-steps changes"),
    (["bench-samplers", "--case", "8gaussians", "--features", "clf:mnist5k"], U, "--features changes nothing"),
    (["bench-samplers", "--case", "mixture64", "--reference", "data"], U, "--reference changes nothing"),
    (["bench-samplers", "--grids", "karras,exponential", "--fit-n", "10"], U, "--fit-n changes nothing"),
    (["bench-samplers", "--grids", "karras", "--stop-short"], U, "--stop-short changes nothing"),
    (["bench-samplers", "--grids", "karras", "--grid-dir", "{cwd}/g"], U, "--grid-dir changes nothing"),
    (["bench-samplers", "--no-diffusers", "--diffusers", "ddim"], U, "--diffusers changes nothing"),
    # nothing would be raced (tuned grids only, for none of the samplers asked for): refused before any work
    ([*TUNED_ONLY, "--samplers", "euler", "--tuned-samplers", "unipc"], U, "nothing to race"),
    ([*TUNED_ONLY, "--samplers", "unipc,heun_sde", "--tuned-samplers", ""], U, "nothing to race"),
    ([*TUNED_ONLY, "--samplers", "heun_sde", "--tuned-samplers", "heun_sde"], U, "nothing to race"),
    # beside another grid: the tuned grid's options (and rows) would change nothing
    (
        ["bench-samplers", "--case", "8gaussians", "--no-diffusers", "--grids", "karras,tuned", "--samplers", "euler"]
        + ["--tuned-samplers", "unipc", "--out", "{cwd}/b"],
        U,
        "nothing to race on the tuned grid",
    ),
    # a sampler named in --tuned-samplers that would get no tuned grid (others do): it would change nothing
    ([*TUNED_ONLY, "--samplers", "unipc", "--tuned-samplers", "unipc,adaptive"], U, "adaptive chooses its own"),
    ([*TUNED_ONLY, "--samplers", "unipc,heun_sde", "--tuned-samplers", "unipc,heun_sde"], U, "heun_sde is stoch"),
    ([*TUNED_ONLY, "--samplers", "unipc", "--tuned-samplers", "unipc,dpmpp_2m"], U, "dpmpp_2m is not among"),
    (["bench-samplers", "--reference", "nope"], U, "--reference"),
    (["bench-samplers", "--out", "{ws}/file.txt"], U, "file.txt"),
    (["bench-samplers", "--out", "{ro}/b"], E, "read-only"),
    (["bench-samplers", "--grid-dir", "{ws}/file.txt", "--out", "{cwd}/b"], U, "file.txt"),
    # -- guidance-sweep -----------------------------------------------------------------------------------------
    # a classifier must read the run's data and name its classes: no CNN of images for points, no classifier of
    # another data set (its class k is another thing) - refused before anything is sampled
    (["guidance-sweep", "{ws}/named", "--classifier", "fashion_mnist"], U, "was trained on the classes T-shirt/top"),
    (["guidance-sweep", "{run}", "--out", "{ws}/mine"], U, "would replace a file no torchdiffusion command wrote"),
    (["guidance-sweep", "{run}", "--set", "sample.labels=random"], U, "guidance-sweep sets it by asking for every"),
    (["train", "--preset", "digits-test", *FASHION_EVAL, "--out", "{cwd}/run"], U, "fashion_mnist was trained on"),
    (["guidance-sweep", "{ws}/toy", "--classifier", "mnist5k"], U, "holds vector data"),
    (["evaluate", "{ws}/named", "--metrics", "classes", "--classifier", "fashion_mnist"], U, "on the classes T-shirt"),
    (["sample", "{ws}/named", "--class", "1", "--classifier", "{ws}/clf-fashion"], U, "on the classes T-shirt/top"),
    (["sample", "{run}", "--class", "1", "--classifier", "{ws}/clf-rgb"], U, "reads 3-channel images"),
    (["sample", "{run}", "--class", "1", "--classifier", "{ws}/clf-16px"], U, "on 16x16 images; this run makes 8x8"),
    (
        ["sample", "{run}", "--class", "1", "--classifier", "{ws}/clf-k4"],
        U,
        "tells 4 classes apart; this run is conditioned on 10",
    ),
    (["sample", "{ws}/toy", "--class", "1", "--classifier", "{ws}/clf-rgb"], U, "holds vector data"),
    (["sample", "{ws}/toy", "--set", "sample.clip_denoised=true"], U, "clip_denoised is read only by images and"),
    # the two kinds of classifier file, each given where the other is needed
    (
        ["sample", "{run}", "--class", "1", "--classifier", "{ws}/eval-clf.safetensors"],
        U,
        "is an evaluation classifier",
    ),
    (["guidance-sweep", "{run}", "--classifier", "{ws}/clf-k4/noisy-classifier.safetensors"], U, "is a noise-aware"),
    (["guidance-sweep", "{run}", "--set", "sample.guidance=2"], U, "guidance-sweep sets it by --scales"),
    (["evaluate", "{run}", "--metrics", "fd", "--set", "sample.n=7"], U, "sample.n changes nothing: evaluate sets it"),
    (["evaluate", "{run}", "--metrics", "fd", "--set", "sample.seed=7"], U, "evaluate sets it by --seed"),
    (["guidance-sweep", "{ws}/uncond"], U, "varies the guidance of a class- or context-conditional run"),
    (["guidance-sweep", "{ws}/context-run", "--mode", "class"], U, "takes context vectors (drop --mode class)"),
    (["guidance-sweep", "{run}", "--sampler", "nope"], U, "unknown sampler 'nope'; choose from euler"),
    (["guidance-sweep", "{run}", "--grid", "exponential", "--rho", "3"], U, "--rho shapes the karras grid"),
    (["guidance-sweep", "{run}", "--set", "train.lr=1"], U, "only sample settings can be changed here"),
    (["guidance-sweep", "{run}", "--scales", "-1,2"], U, "scales"),
    (["guidance-sweep", "{run}", "--scales", "x"], U, "x"),
    (["guidance-sweep", "{run}", "--scales", "nan"], U, "scales"),
    (["guidance-sweep", "{run}", "--scales", "1;2"], U, "separated by commas, got '1;2'"),
    (["guidance-sweep", "{run}", "--scales", ","], U, "scales"),
    (["guidance-sweep", "{run}", "--n-per-class", "0"], U, "--n-per-class"),
    (["guidance-sweep", "{run}", "--n-per-class", BIG], U, "--n-per-class"),
    (["guidance-sweep", "{run}", "--steps", "0"], U, "--steps"),
    (["guidance-sweep", "{run}", "--batch-size", "0"], U, "--batch-size"),
    (["guidance-sweep", "{run}", "--seed", "-1"], U, "--seed"),
    (["guidance-sweep", "{run}", "--mode", "nope"], U, "--mode"),
    (["guidance-sweep", "{run}", "--classifier", "{ws}/missing.safetensors"], U, "missing"),
    (["guidance-sweep", "{run}", "--classifier", "{ws}/rand.safetensors"], U, "rand.safetensors"),
    (["guidance-sweep", "{run}", "--classifier", "{ws}/pickle.safetensors"], U, "pickle.safetensors"),
    (["guidance-sweep", "{run}", "--out", "{ws}/file.txt"], U, "file.txt"),
    (["guidance-sweep", "{ws}/missing"], U, "does not exist"),
    (["guidance-sweep", "{bad}/randweights"], U, "ema.safetensors"),
    # -- train-classifier ---------------------------------------------------------------------------------------
    (["train-clip", "--preset", "nope"], U, "unknown preset"),
    (["train-clip", "--set", "data.source=digits", "--out", "{cwd}/clip"], U, "no captions"),
    (["train-clip", "--set", "model.embed_dim=0", "--out", "{cwd}/clip"], U, "model.embed_dim"),
    (["train-clip", "--set", "train.lr=nan", "--out", "{cwd}/clip"], U, "train.lr"),
    (["train-clip", "--set", "data.seed=-1", "--out", "{cwd}/clip"], U, "data.seed"),
    (["train-clip", "--images", "0"], U, "--images"),
    (["train-clip", "--config", "{ws}/rand.bin"], U, "config"),
    (["train-classifier", "nope"], U, "unknown preset"),
    (["train-classifier", "{bad}/noconfig"], U, "config.json"),
    (["train-classifier", "{run}", "--images", "0"], U, "--images"),
    (["train-classifier", "{run}", "--out", "{ws}/mine"], U, "would replace a file no torchdiffusion command wrote"),
    (["bench-samplers", "--case", "8gaussians", "--n", "16", "--nfe", "3", "--out", "{ws}/mine"], U, "would replace"),
    (["train-classifier", "{run}", "--set", "model.channels=64"], U, "changes nothing: train-classifier reads the"),
    (["train-classifier", "{run}", "--evaluation", "--set", "diffusion.T=100"], U, "reads the data and train.seed"),
    (["train-classifier", "{run}", "--images", BIG + "000"], U, "--images"),
    (["train-classifier", "{run}", "--batch-size", "0"], U, "--batch-size"),
    # a labelled table: the classifiers are image CNNs (it said the data had no class labels)
    (["train-classifier", "table-iris", "--set", "data.target=target", "--out", "{cwd}/c"], U, "is table data"),
    (["train-classifier", "{run}", "--lr", "0"], U, "--lr"),
    (["train-classifier", "{run}", "--lr", "nan"], U, "--lr"),
    (["train-classifier", "{run}", "--width", "0"], U, "--width"),
    (["train-classifier", "{run}", "--holdout", "-1"], U, "--holdout"),
    (["train-classifier", "{run}", "--holdout", "1000000"], U, "--holdout"),
    (["train-classifier", "{run}", "--seed", "-1"], U, "--seed"),
    (["train-classifier", "{run}", "--threads", "-1"], U, "--threads"),
    (["train-classifier", "{run}", "--set", "train.images=inf"], U, "train.images"),
    (["train-classifier", "{run}", "--out", "{ws}/file.txt"], U, "file.txt"),
    (["train-classifier", "{run}", "--out", "{ro}/clf"], E, "read-only"),
    (["train-classifier", "{run}", "--images", "64", "--holdout", "32", "--out", "{full}/clf"], E, "space"),
    (["train-classifier", "toy-2d", "--out", "{cwd}/clf"], U, "CNNs for image data; the toy data is vector"),
    # -- train-autoencoder --------------------------------------------------------------------------------------
    (["train-autoencoder", "--preset", "nope"], U, "unknown autoencoder preset"),
    (["train-autoencoder", "--preset", "tiny-ae", "--set", "loss.nope=1", "--out", "{cwd}/ae"], U, "loss.nope"),
    (["train-autoencoder", "--preset", "tiny-ae", "--set", "train.lr=nan", "--out", "{cwd}/ae"], U, "train.lr"),
    (["train-autoencoder", "--preset", "tiny-ae", "--set", "train.images=0", "--out", "{cwd}/ae"], U, "train.images"),
    (["train-autoencoder", "--preset", "tiny-ae", "--set", "loss.beta=-1", "--out", "{cwd}/ae"], U, "loss.beta"),
    (["train-autoencoder", "--preset", "tiny-ae", "--set", "data.seed=-1", "--out", "{cwd}/ae"], U, "data.seed"),
    (["train-autoencoder", "--preset", "tiny-ae", "--set", "loss.reconstruction=l3"], U, "loss.reconstruction"),
    (["train-autoencoder", "--preset", "tiny-ae", "--set", "model.channel_mult=", "--out", "{cwd}/ae"], U, "levels"),
    (["train-autoencoder", "--config", "{ws}/missing.json"], U, "does not exist"),
    (["train-autoencoder", "--config", "{ws}/rand.bin", "--out", "{cwd}/ae"], U, "config"),
    (["train-autoencoder", "--config", "{run}/config.json", "--out", "{cwd}/ae"], U, "unknown config key"),
    (["train-autoencoder", "--preset", "tiny-ae", "--set", "data.source=toy", "--out", "{cwd}/ae"], U, "image"),
    (["train-autoencoder", "--preset", "tiny-ae", "--set", "model.in_channels=3", "--out", "{cwd}/ae"], U, "channels"),
    (["train-autoencoder", "--preset", "tiny-ae", "--set", "data.image_size=7,7", "--out", "{cwd}/ae"], U, "divide"),
    (["train-autoencoder", "--preset", "tiny-ae", "--out", "{ws}"], U, "not empty"),
    # latents are what a diffusion run reads; an autoencoder or text encoder trains on pixels
    (["train-autoencoder", "--preset", "tiny-ae", "--set", "data.latents_of={ws}", "--out", "{cwd}/ae"], U, "by train"),
    (["train-clip", "--preset", "emoji16-clip-tiny", "--set", "data.latents_of={ws}", "--out", "{cwd}/c"], U, "train"),
    (["train-autoencoder", "--preset", "tiny-ae", "--out", "{ws}/file.txt"], U, "file.txt"),
    (["train-autoencoder", "--preset", "tiny-ae", "--out", "{ro}/ae"], E, "read-only"),
    (["train-autoencoder", "--preset", "tiny-ae", "--out", "{full}/ae"], E, "space"),
    # -- export -------------------------------------------------------------------------------------------------
    (["export", "{run}", "--format", "zip", "--out", "{cwd}/x"], U, "invalid choice"),
    (["export", "{run}", "--out", "{cwd}/x"], U, "--format"),
    (["export", "{ws}/context-run", "--format", "onnx", "--out", "{cwd}/x"], U, "context- or text-conditioned"),
    (["export", "{run}", "--format", "diffusers", "--out", "{ws}/file.txt"], U, "file.txt"),
    (["export", "{run}", "--format", "diffusers", "--out", "{ws}"], U, "holds other files"),
    (["export", "{run}", "--format", "diffusers", "--out", "{ro}/x"], E, "read-only"),
    (["export", "{bad}/pickleweights", "--format", "diffusers", "--out", "{cwd}/x"], U, "ema.safetensors"),
]


def _case_id(case) -> str:
    argv = case[0]
    return " ".join(a.replace("{", "").replace("}", "") for a in argv)[:80] or "(no command)"


def _mount(*args) -> bool:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    return r.returncode == 0


def _make_bad_runs(run: Path, bad: Path) -> None:
    """Damaged copies of a run folder: one way of damage each."""

    def copy(name: str) -> Path:
        return Path(shutil.copytree(run, bad / name))

    (copy("noconfig") / "config.json").unlink()
    (copy("badjson") / "config.json").write_text("{ not json")
    (copy("jsonarray") / "config.json").write_text("[1, 2]")
    for name, rho in (("badvalue", -1.0), ("nanvalue", "NaN")):
        d = json.loads((run / "config.json").read_text())
        d["sample"]["rho"] = rho
        (copy(name) / "config.json").write_text(json.dumps(d).replace('"NaN"', "NaN"))
    rng = np.random.default_rng(0)
    for w in ("ema", "model"):
        size = (run / f"{w}.safetensors").stat().st_size
        (copy("randweights") if w == "ema" else bad / "randweights").joinpath(f"{w}.safetensors").write_bytes(
            rng.bytes(size)
        )
    (copy("pickleweights") / "ema.safetensors").write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    whole = (run / "ema.safetensors").read_bytes()
    (copy("truncweights") / "ema.safetensors").write_bytes(whole[: len(whole) // 2])
    (copy("emptyweights") / "ema.safetensors").write_bytes(b"")
    ne = copy("noema")  # run.json records both weights files (as training writes it); the EMA is gone
    digests = {f: hashlib.sha256((ne / f).read_bytes()).hexdigest() for f in ("model.safetensors", "ema.safetensors")}
    (ne / "run.json").write_text(json.dumps({**json.loads((ne / "run.json").read_text()), "weights_sha256": digests}))
    (ne / "ema.safetensors").unlink()  # the raw weights stay: not a stand-in for the EMA
    nw = copy("noweights")
    (nw / "ema.safetensors").unlink()
    (nw / "model.safetensors").unlink()
    other = write_run(bad / "_other", "digits-test", ["model.channels=8", "model.groups=2"])
    wn = copy("wrongnet")
    for w in ("ema", "model"):
        shutil.copy(other / f"{w}.safetensors", wn / f"{w}.safetensors")
    shutil.rmtree(other)
    (copy("norunjson") / "run.json").unlink()
    (copy("badrunjson") / "run.json").write_text("{")


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The shared folder: a run, damaged runs, bad files, a read-only mount and a full tmpfs (as root)."""
    ws = tmp_path_factory.mktemp("bad-inputs")
    run = write_run(ws / "run", *CLASS_RUN)
    write_run(ws / "context-run", "digits-test", ["model.context_dim=3"], (1, 8, 8))  # the ONNX export refuses it
    write_run(ws / "uncond", "digits-test", [], (1, 8, 8))  # no conditioning at all
    bad = ws / "bad"
    bad.mkdir()
    _make_bad_runs(run, bad)
    rng = np.random.default_rng(1)
    (ws / "file.txt").write_text("not a folder\n")
    (ws / "folder.png").mkdir()
    (ws / "notes.png.manifest.json").write_text('{"my": "notes"}\n')  # the user's, where notes.png's would go
    (ws / "side.mp4").mkdir()  # where a trajectory's MP4 beside side.png would go (written after the PNG)
    (ws / "dangling").symlink_to(ws / "nowhere")  # a link whose target is gone
    (ws / "man.png.manifest.json").mkdir()  # where man.png's manifest would go
    (ws / "folder.png" / "keep.txt").write_text("inside a folder named like a file\n")
    for name in ("rand.bin", "rand.png", "rand.safetensors"):
        (ws / name).write_bytes(rng.bytes(4096))
    (ws / "pickle.safetensors").write_bytes(pickle.dumps({"net": "not tensors"}))
    (ws / "array.json").write_text("[1, 2, 3]\n")
    named = Path(shutil.copytree(run, ws / "named"))  # the run as training writes it: its data's class names
    info = json.loads((named / "run.json").read_text())
    (named / "run.json").write_text(json.dumps({**info, "class_names": [str(d) for d in range(10)]}))
    few = Path(shutil.copytree(run, ws / "few-classes"))  # ten classes in the network, labels 0-2 in its data
    (few / "run.json").write_text(json.dumps({**info, "num_classes": 3}))
    write_run(ws / "toy", "toy-2d", ["model.mlp_width=8"], (2,))
    _write_noisy_classifiers(ws)
    (ws / "mine").mkdir()  # a folder of the user's own, with a page named like an evaluation's
    (ws / "mine" / "summary.html").write_text("<p>my notes</p>\n")
    (ws / "mine" / "grid.png").write_bytes(rng.bytes(64))
    for name in ("noisy-classifier.json", "results.md"):  # named like a classifier's card, a benchmark's table
        (ws / "mine" / name).write_text("my notes\n")
    (ws / "pics").mkdir()  # a folder of images to train on
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(ws / "pics" / f"{i}.png")
    (ws / "pipeline").mkdir()  # what a diffusers pipeline folder is known by
    (ws / "pipeline" / "model_index.json").write_text('{"_class_name": "DDPMPipeline"}\n')
    for folder, files in (  # the files an autoencoder's and a contrastive model's folders are made of
        ("ae", ("config.json", "autoencoder.safetensors", "autoencoder.json", "reconstructions.png")),
        ("clip", ("config.json", "contrastive.safetensors", "metrics.jsonl", "report.json")),
        ("tuned", ("config.json", "run.json", "grids/dpmpp_2m-nfe4.json")),  # a run's tuned grid, read by sample
    ):
        for name in files:
            (ws / folder / name).parent.mkdir(parents=True, exist_ok=True)
            (ws / folder / name).write_bytes(rng.bytes(64))
    np.save(ws / "full.npy", np.zeros((16, 8, 8), np.float32))
    (ws / "trunc.npy").write_bytes((ws / "full.npy").read_bytes()[:40])
    (ws / "full.npy").unlink()
    mounts = {}
    try:
        _mount_both(ws, mounts)
        yield {"ws": ws, "run": run, "bad": bad, "mounts": mounts}
    finally:
        for m in mounts.values():
            _mount_cleanup(m)


def _write_noisy_classifiers(ws: Path) -> None:
    """Classifier files the 8x8 one-channel, ten-class run cannot use (and an evaluation classifier it can)."""
    import torch

    from torchdiffusion.data.builtin import FASHION_NAMES
    from torchdiffusion.evaluation.classifier import ClassifierConfig, SmallClassifier, save_classifier
    from torchdiffusion.evaluation.noisy_classifier import (
        FILE_NAME,
        NoisyClassifier,
        NoisyClassifierConfig,
        save_noisy_classifier,
    )

    torch.manual_seed(0)
    save_classifier(SmallClassifier(ClassifierConfig(width=8, feature_dim=16)), ws / "eval-clf.safetensors")
    for folder, channels, k, card in (
        ("clf-rgb", 3, 10, {}),
        ("clf-k4", 1, 4, {}),
        ("clf-fashion", 1, 10, {"data": "fashion_mnist", "classes": list(FASHION_NAMES)}),
        ("clf-16px", 1, 10, {"image_shape": [1, 16, 16]}),  # its card says: trained on 16x16 images
    ):
        net = NoisyClassifier(NoisyClassifierConfig(in_channels=channels, num_classes=k, width=8, emb_dim=16))
        save_noisy_classifier(net, ws / folder / FILE_NAME, card)


def _mount_both(ws: Path, mounts: dict) -> None:
    """A read-only bind mount at ws/ro and a full 256 KiB tmpfs at ws/full, each with an earlier artefact."""
    (ws / "ro_src").mkdir()
    (ws / "ro_src" / "before.txt").write_text("an earlier artefact\n")
    (ws / "ro").mkdir()
    if _mount("--bind", str(ws / "ro_src"), str(ws / "ro")):
        if _mount("-o", "remount,ro,bind", str(ws / "ro")):
            mounts["ro"] = ws / "ro"
        else:
            _mount_cleanup(ws / "ro")
    (ws / "full").mkdir()
    if _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(ws / "full")):
        (ws / "full" / "before.txt").write_text("an earlier artefact\n")
        _fill(ws / "full" / "filler")
        mounts["full"] = ws / "full"


def _mount_cleanup(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)


def _fill(path: Path) -> None:
    """Write until the file system is full (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots``: path -> sha256 of its bytes ('dir' for a folder)."""
    state = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_symlink() and not p.exists():  # a link to nothing: its target's name
                state[str(p)] = f"link to {os.readlink(p)}"
                continue
            state[str(p)] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return state


def run_case(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expected: int, needle: str, command: str | None) -> None:
    """Exit code, no traceback, one error line. A full disk shows only while writing, after the work (whose
    log lines may come first): there the error line must be the last line and the only error line."""
    assert code == expected, f"exit {code}, expected {expected}: {err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    if needle == "space":
        assert sum(": error: " in line for line in lines) == 1, err
        lines = lines[-1:]
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    prefix = f"torchdiffusion {command}: error: " if command in COMMANDS else "torchdiffusion"
    assert lines[0].startswith(prefix), lines[0]
    assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input(case, world, tmp_path, monkeypatch, capsys):
    template, expected, needle = case
    for key in ("ro", "full"):
        if any("{" + key + "}" in a for a in template) and key not in world["mounts"]:
            pytest.skip(f"mounting a {'read-only bind' if key == 'ro' else 'tmpfs'} folder is not permitted here")
    places = {"ws": world["ws"], "run": world["run"], "bad": world["bad"], "cwd": tmp_path}
    places.update({k: world["mounts"].get(k, "") for k in ("ro", "full")})
    argv = [a.format(**places) for a in template]
    monkeypatch.chdir(tmp_path)
    before = snapshot(world["ws"], tmp_path)
    code, _, err = run_case(argv, capsys)
    assert_one_line_error(code, err, expected, needle, argv[0] if argv else None)
    assert snapshot(world["ws"], tmp_path) == before, "files were written, changed or left behind"


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--guidance", "3"], "--guidance changes nothing: sample.guidance is read only by a class-"),
        (["--guidance-rescale", "0.5"], "--guidance-rescale changes nothing: sample.guidance_rescale is read"),
        (["--guidance-interval", "0.5,2"], "--guidance-interval changes nothing: sample.guidance_interval"),
        (["--set", "sample.guidance=3"], "sample.guidance is read only by a class-, context- or text-conditioned"),
        (["--set", "sample.guidance_interval=0.5,2"], "sample.guidance_interval is read only by"),
    ],
    ids=["guidance", "rescale", "interval", "set-guidance", "set-interval"],
)
def test_guidance_flags_for_an_unconditional_run_are_refused(tmp_path, monkeypatch, capsys, flags, needle):
    """Nothing reads them (the run has no conditioning and no guide model): refused, not ignored."""
    run = write_run(tmp_path / "uncond", "digits-test", ["sample.steps=2"])
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = run_case(["sample", str(run), "--n", "2", *flags], capsys)
    assert_one_line_error(code, err, U, needle, "sample")
    assert snapshot(tmp_path) == before


def test_corpus_covers_every_command():
    per_command = {}
    for argv, _, _ in CASES:
        if argv and argv[0] in COMMANDS:
            per_command[argv[0]] = per_command.get(argv[0], 0) + 1
    assert set(per_command) == set(COMMANDS)
    assert len(CASES) >= 150


def test_help_is_the_only_output_on_stdout(capsys):
    for cmd in COMMANDS:
        assert main([cmd, "--help"]) == 0
        out, err = capsys.readouterr()
        assert err == "" and "usage: torchdiffusion " + cmd in out and "exit codes:" in out


@pytest.mark.parametrize(
    "template,expected,needle",
    [
        (["sample", "{run}", "--steps", "0"], U, "--steps"),
        (["train", "--preset", "digits-test", "--set", "train.images=inf"], U, "train.images"),
        (["sample", "{bad}/pickleweights"], U, "ema.safetensors"),
        (["evaluate", "{run}", "--metrics", "nll", "--vlb-timesteps", "100"], U, "--vlb-timesteps"),
        (["sample", "{run}", "--n", "2", "--steps", "1", "--out", "{full}/x.png"], E, "space"),
    ],
    ids=["argparse", "config", "weights", "evaluate", "disk-full"],
)
def test_bad_input_in_a_real_process(template, expected, needle, world, tmp_path):
    if any("{full}" in a for a in template) and "full" not in world["mounts"]:
        pytest.skip("mounting a tmpfs folder is not permitted here")
    places = {"ws": world["ws"], "run": world["run"], "bad": world["bad"], "full": world["mounts"].get("full", "")}
    before = snapshot(world["ws"], tmp_path)
    code, out, err = td(*[a.format(**places) for a in template], cwd=tmp_path)
    assert_one_line_error(code, err, expected, needle, template[0])
    assert snapshot(world["ws"], tmp_path) == before


def test_usage_error_is_the_last_line_and_help_goes_to_stdout(tmp_path):
    code, out, err = td("sample", "--steps", "x", cwd=tmp_path)
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith("torchdiffusion sample: error: argument --steps")
    code, out, err = td("sample", "--help", cwd=tmp_path)
    assert code == 0 and err == "" and out.startswith("usage: torchdiffusion sample")


def _torchrun(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "torchdiffusion", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--preset", "digits-test", "--set", "train.batch_size=0"], "train.batch_size"),
        (["train", "--preset", "digits-test", "--steps-typo", "1"], "unrecognized arguments"),
        (["train", "--preset", "digits-test", "--set", "train.batch_size=63"], "divisible"),
    ],
    ids=["bad-value", "usage", "training-error"],
)
def test_torchrun_prints_one_line_once(args, needle, tmp_path):
    r = _torchrun([*args, "--out", str(tmp_path / "run")], tmp_path)
    assert r.returncode != 0
    ours = [line for line in r.stderr.splitlines() if line.startswith("torchdiffusion train")]
    assert len(ours) == 1 and needle in ours[0], r.stderr
    # torchrun's own summary names each failed worker's exit code; no traceback of ours anywhere
    assert 'File "' + str(Path(__file__).parents[1] / "src") not in r.stderr, r.stderr
    assert "torchdiffusion/" not in "\n".join(line for line in r.stderr.splitlines() if line.strip().startswith("File"))
