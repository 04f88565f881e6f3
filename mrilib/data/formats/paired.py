"""Paired clean/corrupted images (e.g. motion or metal artefacts) as a run dataset.

The folder layout is described in :mod:`mrilib.data.artefacts`
(:class:`~mrilib.data.artefacts.PairedImageDataset`): ``clean/<name>``,
``corrupted/<name>`` and optional ``mask/<name>``, optionally below
``train/``, ``val/``, ``test/``. Each file is one subject. A slice's input k-space
is simulated (embedded coil/noise model) from the *corrupted* image, its target is
the *clean* image, both resampled to ``image_size``; the artefact mask, when given,
is kept per slice as ``artefact_mask``.

Options: ``image_size`` (default: native), ``num_coils`` (4), ``snr`` (30; ``None`` =
noise-free), ``phase`` (``True``), ``seed`` (0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from mrilib.data.artefacts import PairedImageDataset
from mrilib.data.formats.base import DataFormat, SliceSample, VolumeRef, select_slices, stable_seed
from mrilib.data.formats.simulate import simulate_slice, smooth_phase, subject_coil_maps, volume_sigma
from mrilib.data.resample import resample_image, resample_mask

__all__ = ["Paired"]


class Paired(DataFormat):
    """Reader of paired clean/corrupted image folders (see the module docstring)."""

    name = "paired"
    title = "Paired clean / corrupted images (motion, metal …; image-only, simulated k-space)"
    kind = "image"
    url = ""
    defaults = dict(image_size=None, num_coils=4, snr=30.0, phase=True, seed=0)

    def discover(self, root: Path) -> list[VolumeRef]:
        """One :class:`VolumeRef` per image file (pair)."""
        root = Path(root)
        splits = [s for s in ("train", "val", "test") if (root / s / "clean").is_dir()]
        refs = []
        for split in splits or [None]:
            ds = PairedImageDataset(root, split)
            for f, name in zip(ds.files, ds.names()):
                clean, _, mask = ds.load(f)
                size = self.options["image_size"]
                files = [str(ds.clean_dir / f), str(ds.corrupted_dir / f)]
                if mask is not None:
                    files.append(str(ds.mask_dir / f))
                refs.append(
                    VolumeRef(
                        dataset=self.name,
                        files=tuple(files),
                        patient_id=name,
                        contrast="paired",
                        num_slices=int(clean.shape[0]),
                        num_coils=None,
                        shape=(size, size) if size else tuple(int(s) for s in clean.shape[-2:]),
                        split=split,
                        info=dict(file=f, split_folder=split, has_mask=mask is not None),
                    )
                )
        return refs

    def read(self, ref: VolumeRef, slices: Sequence[int] | None = None) -> Iterator[SliceSample]:
        """Yield slices: k-space from the corrupted image, target and image from the clean one."""
        ds = PairedImageDataset(Path(ref.files[0]).parent.parent, ref.info.get("split_folder"))
        clean, corrupted, mask = ds.load(ref.info["file"])
        n = clean.shape[0]
        idx = select_slices(slices, n, ref.path)
        mag_clean = np.abs(clean)
        fg = mag_clean > 0.1 * np.percentile(mag_clean, 99.5)
        scale = float(np.percentile(mag_clean[fg], 99.5)) if fg.any() else float(mag_clean.max() or 1.0)
        size = self.options["image_size"] or max(clean.shape[-2:])
        seed = stable_seed(self.options["seed"], self.name, ref.patient_id)
        maps = subject_coil_maps(int(self.options["num_coils"]), size, seed)
        phase = smooth_phase(size, seed) if self.options["phase"] else None
        sigma = volume_sigma(mag_clean / scale, self.options["snr"], fg)
        for i in idx:
            cor = resample_image(corrupted[i] / scale, size)
            cln = resample_image(clean[i] / scale, size)
            _, kspace = simulate_slice(np.abs(cor) if phase is not None else cor, maps, sigma, seed, i, phase)
            image = (np.abs(cln) * np.exp(1j * phase)).astype(np.complex64) if phase is not None else cln
            masks = {}
            if mask is not None:
                masks["artefact_mask"] = resample_mask(mask[i], size).astype(np.uint8)
            yield SliceSample(
                kspace=kspace,
                acquired=(0, size),
                target=np.abs(cln).astype(np.float32),
                image=image,
                sens_maps=maps,
                masks=masks,
                metadata=self.slice_metadata(ref, i, acquisition="PAIRED", noise_sigma=sigma, simulated=True),
            )
