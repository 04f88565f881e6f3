"""The lesion classifier: a small CNN that says whether a magnitude slice shows a lesion.

It is the *judge* of the poisoning chapters: "the reconstruction shows a lesion"
means ``lesion_probability > 0.5``. It classifies a slice into three classes,
:data:`CLASSES` = ``("healthy", "cyst", "tumour")``, so that it serves both as a
single lesion detector (``lesion_probability = 1 - p(healthy)``) and as the tumour
scorer of the adversarial chapter (``tumour_score``: the tumour logit against the
others, differentiable; ``p(tumour)`` for reports).

Architecture (fully convolutional, then pooled):

- the slice ``(B, H, W)`` or ``(B, 1, H, W)`` is divided by its mean (so the data's
  scale does not matter; differentiable);
- a 5x5 stride-2 stem, then ``n_blocks`` blocks of two 3x3 convolutions with batch
  norm and ReLU; every block but the last is followed by 2x2 max-pooling, the last
  uses dilated convolutions for context (is this dark blob a ventricle or a cyst?);
- a 1x1 convolution gives a *lesion map*: per position, logits of background, cyst
  and tumour at ``1/2**n_blocks`` of the resolution;
- slice logits: ``[0, max_p(m_cyst - m_bg), max_p(m_tumour - m_bg)]`` - a slice is as
  lesion-bearing as its most lesion-like position.

Trained with the slice-level cross-entropy plus a dense per-position cross-entropy
against the (downsampled) lesion masks that the procedural lesions come with
(:mod:`mrilib.poison.classifier`): the dense term tells the network *where* the
evidence is and makes it learn in a few epochs on a CPU. About 10 M multiply-adds
per 64x64 slice; any image size divisible by ``2**n_blocks`` works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CLASSES", "LesionClassifier"]

#: Class names in logit order.
CLASSES = ("healthy", "cyst", "tumour")


def _block(ch_in: int, ch: int, dilation: int = 1) -> list[nn.Module]:
    """Two 3x3 convolutions with batch norm and ReLU."""
    return [
        nn.Conv2d(ch_in, ch, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
        nn.Conv2d(ch, ch, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
    ]


class LesionClassifier(nn.Module):
    """Healthy / cyst / tumour classifier for magnitude slices (see the module docstring).

    Args:
        chans: channels of the stem and first block (doubled per pooled block).
        n_blocks: convolution blocks; the map has ``1/2**n_blocks`` of the resolution.
        dropout: spatial dropout before the map layer (training only).
    """

    def __init__(self, chans: int = 16, n_blocks: int = 3, dropout: float = 0.1):
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        layers = [nn.Conv2d(1, chans, 5, stride=2, padding=2), nn.BatchNorm2d(chans), nn.ReLU(inplace=True)]
        ch_in, ch = chans, chans
        for b in range(n_blocks):
            last = b == n_blocks - 1
            layers += _block(ch_in, ch, dilation=2 if last else 1)
            if not last:
                layers.append(nn.MaxPool2d(2))
                ch_in, ch = ch, ch * 2
            else:
                ch_in = ch
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout2d(dropout)
        self.map_head = nn.Conv2d(ch_in, len(CLASSES), 1)
        self.config = dict(chans=chans, n_blocks=n_blocks, dropout=dropout)
        self.stride = 2 ** n_blocks

    @staticmethod
    def normalise(x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` images divided by their mean (differentiable)."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected (B, H, W) or (B, 1, H, W) magnitude images, got {tuple(x.shape)}")
        x = x.float()
        return x / (x.mean(dim=(-2, -1), keepdim=True).abs() + 1e-6)

    def lesion_map_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Per-position logits ``(B, 3, H / stride, W / stride)`` (background, cyst, tumour)."""
        return self.map_head(self.dropout(self.features(self.normalise(x))))

    @staticmethod
    def pool(map_logits: torch.Tensor) -> torch.Tensor:
        """Slice logits from a map: ``[0, max(cyst - bg), max(tumour - bg)]`` over positions."""
        rel = (map_logits[:, 1:] - map_logits[:, :1]).flatten(2).amax(dim=2)
        return torch.cat([torch.zeros_like(rel[:, :1]), rel], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, 3)`` in the order of :data:`CLASSES`."""
        return self.pool(self.lesion_map_logits(x))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax class probabilities ``(B, 3)``."""
        return F.softmax(self(x), dim=1)

    def lesion_probability(self, x: torch.Tensor) -> torch.Tensor:
        """``1 - p(healthy)``: the probability that the slice shows any lesion, ``(B,)``."""
        return 1.0 - self.probabilities(x)[:, 0]

    def tumour_score(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable tumour score ``logit_tumour - logsumexp(other logits)``, ``(B,)``.

        Equals ``log(p_tumour / (1 - p_tumour))``: > 0 means ``p(tumour) > 0.5``.
        Unbounded, so it keeps a useful gradient where the probability saturates.
        """
        z = self(x)
        return z[:, 2] - torch.logsumexp(z[:, :2], dim=1)

    def lesion_map(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel probability of "lesion here" ``(B, H, W)`` (1 - p(background), upsampled)."""
        p = F.softmax(self.lesion_map_logits(x), dim=1)[:, 0:1]
        return 1.0 - F.interpolate(p, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
