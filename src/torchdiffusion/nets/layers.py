"""Building blocks shared by the networks: noise and condition embeddings, residual and attention blocks.

Every block works on ``(B, C, *spatial)`` tensors with one, two or three spatial dimensions (``dims``), in either
memory format (contiguous or ``channels_last``) and under ``torch.autocast("cpu", dtype=torch.bfloat16)``.

Speed notes (small models on a CPU are overhead- and memory-bound; measurements in docs/bench-train.md):

* The adaptive GroupNorm of a residual block (normalise, then a per-sample scale/shift from the embedding)
  runs as ONE ``group_norm`` kernel: viewing ``(B, C, ...)`` as ``(1, B*C, ...)`` with ``B*G`` groups turns the
  per-sample affine into GroupNorm's own per-channel affine (contiguous layout; channels_last takes the fused
  kernel below, or, where it cannot be built, ``group_norm`` + one ``addcmul``).
* Attention runs on token tensors ``(B, N, C)``, which are free views of a channels_last feature map.
* All the residual blocks' embedding projections are one ``Linear`` (see ``UNet``), not one per block.
* On channels_last CPU tensors every GroupNorm (with the SiLU that follows it, and the per-sample affine) is the
  fused kernel of ``nets.fused`` (PyTorch's channels-last GroupNorm is much slower than its contiguous one);
  contiguous tensors keep PyTorch's kernels.
* bf16 attention over few tokens (``N <= MATH_ATTENTION_MAX_TOKENS``, e.g. 7x7 or 14x14 maps) is written out
  (``softmax(Q K^T / sqrt(d)) V`` as two matmuls): on the CPU the bf16 flash-attention kernel's backward took
  ~10x its forward (docs/bench-train.md); fp32 keeps the fused kernel (fast there, and fp32 results do not
  depend on this path).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cond import neighbour_drop_mask
from . import fused

# The frequency band of the noise embedding, in radians per unit of c_noise. c_noise is either a DDPM timestep
# in [0, T) with T up to ~1000-4000, or EDM's ln(sigma)/4, which spans only ~[-1.6, 1.1] for sigma in
# [0.002, 80]. The DDPM embedding (Ho et al.; frequencies 1 ... 1e-4) resolves timesteps but gives ln(sigma)/4
# at most one radian per unit; Song et al.'s Fourier features (scale 16, ~100 rad per unit) resolve ln(sigma)/4
# but alias timesteps. A geometric band from 1/2000 to 64 rad per unit covers both: its low end varies slowly
# (monotonically, < 0.5 rad) over [0, 1000), its high end splits ln(sigma)/4 finely.
NOISE_FREQ_MIN = 1 / 2000
NOISE_FREQ_MAX = 64.0


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """``nn.Conv1d``, ``nn.Conv2d`` or ``nn.Conv3d`` by the number of spatial dimensions."""
    if dims == 1:
        return nn.Conv1d(*args, **kwargs)
    if dims == 2:
        return nn.Conv2d(*args, **kwargs)
    if dims == 3:
        return nn.Conv3d(*args, **kwargs)
    raise ValueError(f"only 1-D, 2-D and 3-D convolutions are supported, got dims={dims}")


def zero_(module: nn.Module) -> nn.Module:
    """Zero a module's parameters in place (output layers start at zero: the block starts as identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def cap_groups(groups: int, channels: int) -> int:
    """The largest group count <= ``groups`` that divides ``channels`` (GroupNorm needs a divisor)."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


# Noise embedding


class NoiseEmbedding(nn.Module):
    """Features of the scalar noise input: ``c_noise (B,) -> (B, dim)`` = [cos(w c), sin(w c)].

    ``kind="sinusoidal"``: the Transformer/DDPM positional embedding (Vaswani et al. 2017; Ho et al. 2020) with
    the ``dim/2`` frequencies w spaced geometrically over [NOISE_FREQ_MIN, NOISE_FREQ_MAX] (see above).
    ``kind="fourier"``: random Fourier features (Tancik et al. 2020; Song et al. 2021's Gaussian Fourier
    projection) with frequencies drawn once, log-uniformly over the same band, so both c_noise ranges work;
    they are a persistent buffer, saved with the weights.
    """

    def __init__(self, dim: int = 128, kind: str = "sinusoidal", seed: int = 0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"noise embedding dim must be even, got {dim}")
        lo, hi = math.log(NOISE_FREQ_MIN), math.log(NOISE_FREQ_MAX)
        if kind == "sinusoidal":
            w = torch.linspace(lo, hi, dim // 2, dtype=torch.float64).exp()
            self.register_buffer("freqs", w.float(), persistent=False)
        elif kind == "fourier":
            g = torch.Generator().manual_seed(seed)
            w = (lo + (hi - lo) * torch.rand(dim // 2, generator=g, dtype=torch.float64)).exp()
            self.register_buffer("freqs", w.float(), persistent=True)
        else:
            raise ValueError(f"unknown noise embedding {kind!r}; choose sinusoidal or fourier")
        self.dim = dim

    def forward(self, c_noise: Tensor) -> Tensor:
        # Computed in fp32 even under autocast: the phases w*c reach ~1e2 rad and need the mantissa.
        a = c_noise.float()[:, None] * self.freqs[None, :]
        return torch.cat([a.cos(), a.sin()], dim=1)


# Conditioning: class labels, context vectors, and the null embedding for dropped samples


def neighbour_dim(model, data_shape: tuple[int, ...]) -> int:
    """The width of the neighbours' MLP into the noise embedding (``model.text_retrieval`` with
    ``model.retrieval_input="embedding"``; retrieval.py): one flattened example; else 0."""
    on = model.text_retrieval and model.retrieval_input == "embedding"
    return math.prod(int(s) for s in data_shape) if on else 0


def neighbour_channels(model, data_shape: tuple[int, ...]) -> int:
    """The input channels the neighbours add (``model.retrieval_input="channels"``): the example's C; else 0."""
    return int(data_shape[0]) if model.text_retrieval and model.retrieval_input == "channels" else 0


def retrieved_neighbours(cond: dict | None, drop: Tensor, width: int) -> Tensor | None:
    """``cond["neighbours"]``, checked to be (B, ``width``); None when there are none and every sample is
    unconditional or dropped (the null then stands in); a conditioned sample without them is an error."""
    nb = None if cond is None else cond.get("neighbours")
    if nb is None:
        if cond is not None and not bool(drop.all()):
            raise ValueError("this model also takes its prompt's retrieved neighbours (cond['neighbours'])")
        return None
    if nb.ndim != 2 or nb.shape[1] != width:
        raise ValueError(f"neighbours must be (B, {width}), got {tuple(nb.shape)}")
    return nb


def with_neighbour_channels(x_in: Tensor, cond: dict | None, drop: Tensor) -> Tensor:
    """``[x_in, n(c)]`` along the channels: the retrieved neighbours' mean (``cond["neighbours"]``, (B, D)) in the
    example's shape, as extra input channels (RDM-style concatenation); zeros for a dropped or unconditional
    sample. Kept in ``x_in``'s memory format."""
    B = x_in.shape[0]
    drop = neighbour_drop_mask(cond, drop)  # a caption dropped alone keeps its neighbours
    nb = retrieved_neighbours(cond, drop, x_in[0].numel())
    if nb is None:
        n = torch.zeros_like(x_in)
    else:
        n = nb.to(x_in.dtype).reshape(x_in.shape)
        n = torch.where(drop.reshape(B, *[1] * (x_in.ndim - 1)), torch.zeros_like(n), n)
    out = torch.cat([x_in, n], dim=1)
    return out.contiguous(memory_format=torch.channels_last) if memory_format(x_in) is torch.channels_last else out


def memory_format(x: Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a 4-D tensor laid out channels-last and not also plain contiguous (one channel
    or a 1 x 1 image is both; it keeps the default), else ``torch.contiguous_format``."""
    cl = x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


class CondEmbedding(nn.Module):
    """Class and context embeddings, summed, ``(B, emb_dim)``; dropped samples get learned null embeddings.

    Class labels index a table with one extra row (index ``num_classes``) that is the null class; a context
    vector ``(B, K)`` (one-hot, multi-hot, fractional or continuous) goes through a 2-layer MLP and dropped
    samples get a learned null vector instead. With ``neighbour_dim`` the mean of a prompt's retrieved training
    examples ``cond["neighbours"]`` (B, D) (``retrieval.py``) goes through its own 2-layer MLP (last layer zero at
    initialisation) the same way. The result is added to the noise embedding.
    """

    def __init__(self, emb_dim: int, num_classes: int = 0, context_dim: int = 0, neighbour_dim: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.context_dim = context_dim
        self.neighbour_dim = neighbour_dim
        if neighbour_dim > 0:  # retrieval.py: n(c), the mean of a caption's nearest training examples
            self.neighbour_mlp = nn.Sequential(
                nn.Linear(neighbour_dim, emb_dim), nn.SiLU(), zero_(nn.Linear(emb_dim, emb_dim))
            )
            self.neighbour_null = nn.Parameter(torch.zeros(emb_dim))
        if num_classes > 0:
            self.class_emb = nn.Embedding(num_classes + 1, emb_dim)
            nn.init.normal_(self.class_emb.weight, std=1.0 / math.sqrt(emb_dim))
        if context_dim > 0:
            self.context_mlp = nn.Sequential(nn.Linear(context_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            self.context_null = nn.Parameter(torch.zeros(emb_dim))

    @property
    def active(self) -> bool:
        return self.num_classes > 0 or self.context_dim > 0 or self.neighbour_dim > 0

    def forward(self, cond: dict | None, drop: Tensor, batch: int) -> Tensor | None:
        out = None
        if self.num_classes > 0:
            labels = None if cond is None else cond.get("class")
            out = self.class_emb(class_rows(labels, drop, self.num_classes, batch))
        if self.context_dim > 0:
            ctx = None if cond is None else cond.get("context")
            e = _vector_embedding(ctx, self.context_mlp, self.context_null, drop, batch, "context")
            out = e if out is None else out + e
        if self.neighbour_dim > 0:
            drop_n = neighbour_drop_mask(cond, drop)  # a caption dropped alone keeps its neighbours
            nb = retrieved_neighbours(cond, drop_n, self.neighbour_dim)
            e = _vector_embedding(nb, self.neighbour_mlp, self.neighbour_null, drop_n, batch, "neighbours")
            out = e if out is None else out + e
        return out


def class_rows(labels: Tensor | None, drop: Tensor, num_classes: int, batch: int) -> Tensor:
    """(B,) long: each sample's row of a class table with a null row at ``num_classes`` - its label, or the null
    row where ``drop`` is True or no labels are given. Labels outside [0, num_classes) are a ValueError."""
    null = torch.full((batch,), num_classes, dtype=torch.long, device=drop.device)
    if labels is None:
        return null
    labels = labels.to(device=drop.device, dtype=torch.long).reshape(batch)
    checkable = not torch.compiler.is_compiling() and labels.device.type != "meta"  # meta: count_flops, no values
    if checkable and ((labels < 0) | (labels >= num_classes)).any():
        raise ValueError(f"class labels must be in [0, {num_classes})")
    return torch.where(drop, null, labels)


def _vector_embedding(
    v: Tensor | None, mlp: nn.Sequential, null: Tensor, drop: Tensor, batch: int, name: str
) -> Tensor:
    """A (B, D) vector through its 2-layer MLP, ``(B, emb_dim)``; the learned ``null`` where dropped or absent."""
    null = null.to(mlp[0].weight.dtype).expand(batch, -1)
    if v is None:
        return null
    D = mlp[0].in_features
    if v.ndim != 2 or v.shape[1] != D:
        raise ValueError(f"{name} must be (B, {D}), got {tuple(v.shape)}")
    e = mlp(v.to(mlp[0].weight.dtype))
    return torch.where(drop[:, None], null.to(e.dtype), e)


# Normalisation


def norm_act(norm: nn.GroupNorm, x: Tensor, silu: bool = False) -> Tensor:
    """``norm(x)``, then SiLU if asked; one fused kernel for channels_last CPU tensors (``nets.fused``)."""
    if norm.affine and fused.applies(x):
        return fused.group_norm_act(x, norm.num_groups, norm.weight, norm.bias, norm.eps, silu)
    h = norm(x)
    return F.silu(h, inplace=True) if silu else h


def adaptive_group_norm(
    x: Tensor, groups: int, scale: Tensor, shift: Tensor, eps: float = 1e-5, silu: bool = False
) -> Tensor:
    """GroupNorm(x) * (1 + scale) + shift with per-sample ``scale, shift: (B, C)``; x: (B, C, *spatial); then
    SiLU if ``silu``.

    The "scale-shift norm" of Nichol & Dhariwal 2021 (improved DDPM) / adaptive GroupNorm. For a contiguous x
    it is one kernel: ``(B, C, ...)`` as ``(1, B*C, ...)`` with ``B*groups`` groups normalises each sample's
    groups exactly as before, and GroupNorm's per-channel affine becomes the per-sample one. A channels_last
    CPU x takes the fused kernel of ``nets.fused`` (normalisation, affine and SiLU in one pass).
    """
    if fused.applies(x):
        return fused.group_norm_act(x, groups, 1 + scale.float(), shift.float(), eps, silu)
    y = _adaptive_group_norm(x, groups, scale, shift, eps)
    return F.silu(y, inplace=True) if silu else y


def _adaptive_group_norm(x: Tensor, groups: int, scale: Tensor, shift: Tensor, eps: float) -> Tensor:
    B, C = x.shape[:2]
    gain = (1 + scale).to(x.dtype)
    bias = shift.to(x.dtype)
    if x.is_contiguous() and not _tracing():  # (a traced graph must not fix B in the group count B * groups)
        y = F.group_norm(x.reshape(1, B * C, *x.shape[2:]), B * groups, gain.reshape(B * C), bias.reshape(B * C), eps)
        return y.reshape(x.shape)
    # channels_last: (1, B*C, ...) is not a view (and an exported graph keeps B free): normalise, then one
    # fused multiply-add.
    view = (B, C) + (1,) * (x.ndim - 2)
    return torch.addcmul(bias.reshape(view), F.group_norm(x, groups, None, None, eps), gain.reshape(view))


def _tracing() -> bool:
    """Whether the network is being traced into a graph (ONNX export), where the batch size must stay symbolic."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


# Residual block


class ResBlock(nn.Module):
    """Wide-ResNet block with the noise/condition embedding as an adaptive GroupNorm (Ho et al. 2020, App. B;
    Nichol & Dhariwal 2021, Sec. 3 "scale-shift norm"):

        h = conv1(SiLU(GN(x)));  h = conv2(dropout(SiLU(GN(h) (1 + s) + b)));  out = skip(x) + h,

    with ``(s, b)`` = this block's slice of the projected embedding (computed outside, see ``emb_channels``).
    ``conv2`` starts at zero, so every block starts as its skip path.
    """

    def __init__(self, dims: int, in_ch: int, out_ch: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.g1 = cap_groups(groups, in_ch)
        self.g2 = cap_groups(groups, out_ch)
        self.norm1 = nn.GroupNorm(self.g1, in_ch)
        self.conv1 = conv_nd(dims, in_ch, out_ch, 3, padding=1)
        self.conv2 = zero_(conv_nd(dims, out_ch, out_ch, 3, padding=1))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.skip = conv_nd(dims, in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.out_ch = out_ch

    @property
    def emb_channels(self) -> int:
        """Width of this block's slice of the embedding projection: scale and shift."""
        return 2 * self.out_ch

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x: (B, C_in, *spatial), emb: (B, 2 C_out) -> (B, C_out, *spatial)."""
        h = self.conv1(norm_act(self.norm1, x, silu=True))
        scale, shift = emb.chunk(2, dim=1)
        h = adaptive_group_norm(h, self.g2, scale, shift, silu=True)
        h = self.conv2(self.dropout(h))
        return self.skip(x) + h


# Attention


MATH_ATTENTION_MAX_TOKENS = 256  # bf16 up to 16x16 maps: explicit softmax(Q K^T) V; else scaled_dot_product_attention


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """``softmax(Q K^T / sqrt(d) [masked]) V`` over ``(B, heads, N, d)`` (Vaswani et al. 2017, Eq. 1).

    Short bf16/fp16 sequences on the CPU (N <= MATH_ATTENTION_MAX_TOKENS) use two matmuls and a softmax (fast
    forward and backward there; the softmax runs in fp32); everything else - fp32, GPUs, long sequences - the
    fused kernel, which never materialises the N x N weights. ``mask``: bool, True = keep.
    """
    low = q.dtype in (torch.bfloat16, torch.float16) and q.device.type == "cpu"
    if not low or q.shape[-2] > MATH_ATTENTION_MAX_TOKENS:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    w = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
    if mask is not None:
        w = w.masked_fill(~mask, float("-inf"))
    return torch.matmul(w.float().softmax(dim=-1).to(v.dtype), v)


def to_tokens(x: Tensor) -> Tensor:
    """(B, C, *spatial) -> (B, N, C); a free view when x is channels_last."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(t: Tensor, like: Tensor) -> Tensor:
    """(B, N, C) -> (B, C, *spatial) shaped like ``like`` (channels_last strides when t is contiguous)."""
    B, N, C = t.shape
    return t.transpose(1, 2).reshape(like.shape)


def split_heads(t: Tensor, heads: int) -> Tensor:
    """(B, N, C) -> (B, heads, N, C / heads)."""
    B, N, C = t.shape
    return t.reshape(B, N, heads, C // heads).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all positions (Vaswani et al. 2017), pre-GroupNorm, residual:
    out = x + W_o softmax(Q K^T / sqrt(d)) V with Q, K, V = W_qkv GN(x). ``proj`` starts at zero."""

    def __init__(self, channels: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = max(1, channels // max(1, head_channels))
        if channels % self.heads:
            self.heads = 1
        self.norm = nn.GroupNorm(cap_groups(groups, channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_(nn.Linear(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        t = to_tokens(norm_act(self.norm, x))  # (B, N, C)
        B, N, C = t.shape
        qkv = self.qkv(t).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        # unbind, not qkv[0], qkv[1], qkv[2]: its backward stacks the three gradients into one buffer, where three
        # selects each zero-fill a buffer of all three and add them up: the same values, ~3 ms of the demo network's
        # 116 ms bf16 step on an AMX CPU in torch.profiler (scripts/profile_train_step.py)
        a = attention(*qkv.unbind(0))  # (B, heads, N, d)
        a = self.proj(a.transpose(1, 2).reshape(B, N, C))
        return x + from_tokens(a, x)


class CrossAttention(nn.Module):
    """Attention from image positions to text tokens (Rombach et al. 2022, Sec. 3.3), pre-GroupNorm, residual.

    Keys and values come from ``[null token, text tokens]``: the learned null token is always attendable (so no
    row is ever fully masked), and a dropped sample (or ``cond=None``) sees the null token alone. ``proj``
    starts at zero.
    """

    def __init__(self, channels: int, text_dim: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = max(1, channels // max(1, head_channels))
        if channels % self.heads:
            self.heads = 1
        self.norm = nn.GroupNorm(cap_groups(groups, channels), channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(text_dim, 2 * channels)
        self.proj = zero_(nn.Linear(channels, channels))

    def forward(self, x: Tensor, text: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C, *spatial); text: (B, L+1, E) with the null token first; mask: (B, 1, 1, L+1) bool."""
        t = to_tokens(norm_act(self.norm, x))
        B, N, C = t.shape
        q = split_heads(self.q(t), self.heads)
        kv = self.kv(text)  # (B, L+1, 2C)
        k, v = split_heads(kv[..., :C], self.heads), split_heads(kv[..., C:], self.heads)
        a = attention(q, k, v, mask)
        a = self.proj(a.transpose(1, 2).reshape(B, N, C))
        return x + from_tokens(a, x)


def text_tokens(cond: dict | None, drop: Tensor, null_token: Tensor, text_dim: int) -> tuple[Tensor, Tensor]:
    """Keys for cross-attention: ``[null, tokens]`` (B, L+1, E) and the attention mask (B, 1, 1, L+1).

    The null token is always visible; text tokens only where the sample is not dropped and the token is real.
    """
    B = drop.shape[0]
    null = null_token.reshape(1, 1, text_dim).expand(B, 1, text_dim)
    text = None if cond is None else cond.get("text")
    if text is None:
        return null, torch.ones(B, 1, 1, 1, dtype=torch.bool, device=drop.device)
    if text.ndim != 3 or text.shape[2] != text_dim:
        raise ValueError(f"text must be (B, L, {text_dim}), got {tuple(text.shape)}")
    L = text.shape[1]
    real = cond.get("text_mask")
    real = torch.ones(B, L, dtype=torch.bool, device=drop.device) if real is None else real.to(drop.device, torch.bool)
    real = real & ~drop[:, None]
    keys = torch.cat([null.to(text.dtype), text], dim=1)
    mask = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=drop.device), real], dim=1)
    return keys, mask[:, None, None, :]


class PooledText(nn.Module):
    """The caption as one vector added to the noise embedding (Imagen, Saharia et al. 2022, Sec. 2.4:
    "pooled text embedding"; SDXL does the same with CLIP's pooled output), beside cross-attention to its tokens.

        p = normalize(sum_l m_l h_l / sum_l m_l)   over the real tokens h_l (MiniLM's own sentence embedding)
        p = null token                              for a dropped sample, or no text at all
        e_text = Linear(SiLU(Linear(p)))           (B, emb_dim), last layer zero at the start

    It takes the keys and mask of :func:`text_tokens` (null token first), so dropping a caption for classifier-free
    guidance drops both paths at once. A global vector reaches every residual block's scale and shift, where
    cross-attention reads the tokens only at the attention resolutions.
    """

    def __init__(self, text_dim: int, emb_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(text_dim, emb_dim), nn.SiLU(), zero_(nn.Linear(emb_dim, emb_dim)))

    def forward(self, keys: Tensor, mask: Tensor) -> Tensor:
        """keys: (B, L+1, E) with the null token first; mask: (B, 1, 1, L+1) bool -> (B, emb_dim)."""
        real = mask.reshape(mask.shape[0], -1)[:, 1:].to(keys.dtype)  # (B, L)
        count = real.sum(1, keepdim=True)
        mean = (keys[:, 1:] * real[..., None]).sum(1) / count.clamp(min=1.0)
        p = torch.where(count > 0, F.normalize(mean, dim=-1), keys[:, 0])
        return self.mlp(p)


# Resampling (Ho et al. 2020: strided 3x3 conv down, nearest-neighbour x2 + 3x3 conv up)


class Downsample(nn.Module):
    def __init__(self, dims: int, channels: int):
        super().__init__()
        self.conv = conv_nd(dims, channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, dims: int, channels: int):
        super().__init__()
        self.conv = conv_nd(dims, channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
