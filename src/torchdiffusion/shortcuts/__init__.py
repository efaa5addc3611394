"""Shortcuts: students that sample in one to four steps, learnt from a teacher run or from data.

    progressive.py   progressive distillation (Salimans & Ho 2022): two teacher DDIM steps -> one student step
    consistency.py   consistency models (Song et al. 2023) and improved consistency training (Song & Dhariwal 2023)
    reflow.py        rectified flow's reflow (Liu et al. 2022): train on the teacher's (noise, sample) pairs
    straightness.py  how straight a model's ODE paths are (Liu et al. 2022, Eq. 5)
    objectives.py    their training objectives, for training/objective.py's hook
    distill.py       ``distill(teacher, method, steps, out)``: a student as an ordinary run folder

Rectified flow as a training mode is the ``flow`` parameterization (precond.py) with its conversions in
process.py; ``torchdiffusion train --objective rectified_flow`` selects it.
"""
