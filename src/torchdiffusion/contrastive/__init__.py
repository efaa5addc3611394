"""A small contrastive text-image model (CLIP's recipe, our own weights): towers, InfoNCE, training, metrics.

See ``model.py`` for the model and its objective, ``metrics.py`` for retrieval, zero-shot classification and the
contrastive score, ``train.py`` for the run folder ``torchdiffusion train-clip`` writes.
"""

from .config import CLIP_PRESETS, ContrastiveConfig, ContrastiveTrainConfig, TowerConfig, get_clip_preset
from .metrics import SCORE_NAME, contrastive_score, heldout_report, retrieval, retrieval_ranks, top_k, zero_shot
from .model import ContrastiveError, ContrastiveModel, info_nce, load_contrastive, save_contrastive

__all__ = [
    "CLIP_PRESETS",
    "ContrastiveConfig",
    "ContrastiveError",
    "ContrastiveModel",
    "ContrastiveTrainConfig",
    "SCORE_NAME",
    "TowerConfig",
    "contrastive_score",
    "get_clip_preset",
    "heldout_report",
    "info_nce",
    "load_contrastive",
    "retrieval",
    "retrieval_ranks",
    "save_contrastive",
    "top_k",
    "zero_shot",
]
