"""The E2E VarNet of fastMRI, built from a profile's ``varnet`` configuration.

The model is ``fastmri.models.VarNet`` unchanged (Sriram et al. 2020): a sensitivity
U-Net estimates coil maps from the centre of k-space, then ``num_cascades`` blocks of
soft data consistency plus a U-Net regulariser refine the k-space; the output is the
root-sum-of-squares image.
"""

from __future__ import annotations

import torch
from fastmri.models import VarNet

from mrilib.config import VarNetConfig, as_dict, with_overrides

__all__ = ["VARNET_KEYS", "varnet_config", "build_varnet", "count_parameters"]

#: The configuration keys of :func:`build_varnet` with fastMRI's defaults (:class:`mrilib.config.VarNetConfig`).
VARNET_KEYS = as_dict(VarNetConfig())


def varnet_config(cfg: dict | VarNetConfig | None = None) -> dict:
    """A complete, canonical VarNet configuration: ``cfg`` on top of fastMRI's defaults.

    Unknown keys raise ``ValueError`` (a typo must not silently build another model).
    """
    cfg = as_dict(cfg) if isinstance(cfg, VarNetConfig) else dict(cfg or {})
    out = with_overrides(dict(VARNET_KEYS), cfg, VARNET_KEYS, "VarNet configuration")
    for k in ("num_cascades", "chans", "sens_chans", "pools", "sens_pools"):
        out[k] = int(out[k])
        if out[k] < 1:
            raise ValueError(f"VarNet {k} must be >= 1, got {out[k]}")
    out["mask_center"] = bool(out["mask_center"])
    return out


def build_varnet(cfg: dict | VarNetConfig | None = None, seed: int | None = None) -> VarNet:
    """Build ``fastmri.models.VarNet`` from a configuration dict (e.g. ``profile.varnet``).

    Args:
        cfg: ``num_cascades``, ``chans``, ``sens_chans``, ``pools``, ``sens_pools``,
            ``mask_center``; missing keys take fastMRI's defaults (12/18/8/4/4).
        seed: when given, the weights are initialised from ``torch.manual_seed(seed)``
            (the global torch RNG is restored afterwards).
    """
    c = varnet_config(cfg)
    kwargs = dict(
        num_cascades=c["num_cascades"],
        chans=c["chans"],
        sens_chans=c["sens_chans"],
        pools=c["pools"],
        sens_pools=c["sens_pools"],
        mask_center=c["mask_center"],
    )
    if seed is None:
        return VarNet(**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return VarNet(**kwargs)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
