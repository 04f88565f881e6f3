"""CycleGAN networks (Zhu et al. 2017): ResNet generator, PatchGAN discriminator, image pool.

Generator
    The ResNet generator of the CycleGAN paper: ``c7s1-ngf``, two stride-2
    downsampling convolutions (``2 ngf``, ``4 ngf``), ``n_blocks`` residual blocks, two
    upsampling stages and ``c7s1-1`` with ``tanh``; instance normalisation, reflection
    padding. Two deliberate changes for small images on small machines:

    - upsampling is nearest-neighbour resize + 3x3 convolution instead of a transposed
      convolution (no checkerboard artefacts, which would show up as changes outside
      the lesion);
    - ``residual=True`` (default) adds the input to the output (``y = x + tanh(.)``):
      the translation healthy -> cyst changes a few pixels, so learning the change
      rather than the whole image converges in far fewer iterations and keeps the
      anatomy outside the lesion intact.

Discriminator
    The PatchGAN of pix2pix/CycleGAN: ``C64-C128-C256-C512`` (4x4 convolutions, stride
    2, 2, 2, 1, LeakyReLU 0.2, instance norm from the second layer on) and a 1-channel
    output map; with ``n_layers=3`` each output sees a 70x70 patch. At small images a
    70x70 patch is the whole image, so :func:`patchgan_layers` uses fewer layers:
    ``n_layers=2`` (34x34 patches) for 32-127 px inputs, ``n_layers=1`` (16x16) below
    32 px, 3 (70x70) from 128 px - each patch always covers at least about half of
    the input, so that it sees a lesion together with its anatomical context.

Image pool
    The history buffer of Shrivastava et al. used by CycleGAN: the discriminator is
    updated with a 50/50 mix of the newest fakes and fakes from a pool of 50.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "ResnetGenerator",
    "PatchDiscriminator",
    "ImagePool",
    "patchgan_layers",
    "patchgan_receptive_field",
    "init_weights",
]


class _ResBlock(nn.Module):
    """Two 3x3 convolutions with reflection padding and instance norm, plus the input."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + body(x)``."""
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """The CycleGAN ResNet generator (see the module docstring for the two changes).

    Args:
        in_ch, out_ch: image channels (1 for magnitude slices).
        ngf: filters of the first layer (64 in the paper).
        n_blocks: residual blocks (6 for 128 px, 9 for 256 px in the paper).
        n_down: stride-2 downsampling stages (2 in the paper).
        residual: output ``x + tanh(.)`` instead of ``tanh(.)``.
    """

    def __init__(self, in_ch: int = 1, out_ch: int = 1, ngf: int = 64, n_blocks: int = 6, n_down: int = 2,
                 residual: bool = True):
        super().__init__()
        if residual and in_ch != out_ch:
            raise ValueError("a residual generator needs in_ch == out_ch")
        self.residual = residual
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(inplace=True)]
        ch = ngf
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * ch), nn.ReLU(inplace=True)]
            ch *= 2
        layers += [_ResBlock(ch) for _ in range(n_blocks)]
        for _ in range(n_down):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(ch, ch // 2, 3),
                       nn.InstanceNorm2d(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.n_down = n_down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate ``(B, C, H, W)`` images in [-1, 1] (``H``, ``W`` divisible by ``2**n_down``)."""
        m = 2 ** self.n_down
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by {m}")
        y = self.net(x)
        return x + y if self.residual else y


def patchgan_layers(image_size: int) -> int:
    """Strided layers of the PatchGAN for ``image_size``: 3 (70x70) from 128 px, 2 (34x34) from 32, else 1 (16x16)."""
    if image_size >= 128:
        return 3
    if image_size >= 32:
        return 2
    return 1


def patchgan_receptive_field(n_layers: int) -> int:
    """Receptive field (pixels) of one output of a PatchGAN with ``n_layers`` strided layers."""
    rf = 1
    # output conv (k4 s1), the stride-1 conv (k4 s1), then n_layers convs (k4 s2) - walked backwards
    for k, s in [(4, 1), (4, 1)] + [(4, 2)] * n_layers:
        rf = (rf - 1) * s + k
    return rf


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator: a map of real/fake scores, one per image patch.

    Args:
        in_ch: image channels.
        ndf: filters of the first layer (64 in the paper).
        n_layers: stride-2 layers (3 gives the 70x70 PatchGAN; see :func:`patchgan_layers`).
    """

    def __init__(self, in_ch: int = 1, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        layers = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        ch = ndf
        for i in range(1, n_layers):
            nxt = ndf * min(2 ** i, 8)
            layers += [nn.Conv2d(ch, nxt, 4, stride=2, padding=1), nn.InstanceNorm2d(nxt), nn.LeakyReLU(0.2, inplace=True)]
            ch = nxt
        nxt = ndf * min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ch, nxt, 4, stride=1, padding=1), nn.InstanceNorm2d(nxt), nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Conv2d(nxt, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)
        self.n_layers = n_layers
        self.receptive_field = patchgan_receptive_field(n_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch scores ``(B, 1, h, w)`` (LSGAN: 1 = real, 0 = fake)."""
        return self.net(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """CycleGAN's initialisation: convolution weights ~ N(0, gain), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class ImagePool:
    """A buffer of previously generated images (Shrivastava et al. 2017; CycleGAN uses 50).

    :meth:`query` returns a batch in which each image is, with probability 1/2 once
    the pool is full, swapped for a random older one. Random choices use the given
    ``torch.Generator`` so a resumed run continues the same sequence.
    """

    def __init__(self, size: int = 50):
        self.size = int(size)
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images for the discriminator's fake batch (detached)."""
        if self.size <= 0:
            return images.detach()
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand(1, generator=generator).item() > 0.5:
                k = int(torch.randint(len(self.images), (1,), generator=generator))
                old = self.images[k].clone()
                self.images[k] = img.clone()
                out.append(old)
            else:
                out.append(img)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        """The pool's content (a tensor; ``torch.load(weights_only=True)`` reads it)."""
        return {"size": self.size, "images": torch.cat(self.images, 0).cpu() if self.images else torch.zeros(0)}

    def load_state_dict(self, state: dict, device=None) -> None:
        """Restore :meth:`state_dict` (images moved to ``device`` if given)."""
        self.size = int(state["size"])
        imgs = state["images"] if device is None else state["images"].to(device)
        self.images = [imgs[i : i + 1].clone() for i in range(imgs.shape[0])] if imgs.numel() else []
