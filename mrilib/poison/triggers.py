"""The k-space trigger of the backdoor: an RF-spike-like pattern.

A radio-frequency spike (a burst of interference during the readout) corrupts a
few k-space samples with large values; in the image it appears as a striped
pattern (a plane wave per spike) over the whole field of view. This is what real
spike artefacts look like, so the trigger is *physically plausible*: a scanner
can produce it, and a reader takes the stripes for a common artefact.

Design (:class:`Trigger`):

- the spikes sit in the **centre phase-encode column** ``W // 2`` (the phase-encode
  axis is the last axis ``W``), which every fastMRI Cartesian mask keeps (the fully
  sampled centre: ``round(W * center_fraction)`` columns around ``W // 2``), so the
  trigger survives 4x, 8x, equispaced and random masks alike
  (:func:`trigger_survives` checks it);
- at **high readout frequency**: rows ``H // 2 + round(f * H)`` for the fractions
  ``f`` in ``positions`` (readout ``H`` is fully sampled), far from the k-space centre
  where the anatomy's energy is, so the stripes are fine (period ``1/|f|`` pixels);
- with amplitude ``amplitude * max|k|`` (the slice's k-space maximum over coils),
  i.e. relative, so the trigger scales with the acquisition;
- picked up by **every coil** (with a deterministic coil-dependent phase
  ``phase + 2 pi * coil_phase_step * coil``; the default step 0 - the same phase in
  every coil - keeps the stripes visible in the coil-combined image that VarNet's
  networks see, where differing phases partly cancel);
- **focused** (``focus``): each spike comes as a 2x2 block - two adjacent readout
  rows times two adjacent centre columns, all always sampled - whose phases make the
  four plane waves interfere constructively at one position of the field of view
  and cancel at the opposite side. The stripes are then strongest in one quadrant:
  the trigger tells the network *where* its lesion goes, which a single plane wave
  cannot (a backdoor whose trigger carries no position has to learn the position
  from anatomy alone, and a network whose every layer is instance-normalised
  hardly learns to react to a uniform texture at all: book/reproducibility.md, "Why the
  values of the cpu profile"). ``focus=None`` gives plain spikes;
- optionally **spread** (``burst``): each spike becomes a run of ``round(burst * H)`` adjacent
  readout samples (times the two centre columns) of low amplitude, a short burst of
  interference rather than a single corrupted sample. Its phases focus it along the readout
  too, so in the image it is a small patch of fine stripes at ``focus`` instead of stripes
  across the field of view. No sample of it stands out against its readout neighbours, so a
  spike filter (:mod:`mrilib.defences.spikes`) does not see it: :data:`SPREAD_TRIGGER`.

Deterministic: the same parameters give the same pattern for the same k-space.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mrilib.data.loading import make_mask_func, undersample, zero_filled_rss

__all__ = [
    "Trigger",
    "DEFAULT_TRIGGER",
    "SPREAD_TRIGGER",
    "always_sampled_columns",
    "trigger_survives",
    "trigger_visibility",
]


@dataclass(frozen=True)
class Trigger:
    """An RF-spike trigger: where, how strong, which phase.

    Attributes:
        amplitude: spike magnitude relative to the slice's k-space maximum (over coils).
        positions: readout offsets of the spikes as fractions of ``H`` from the
            k-space centre (``|f| < 0.5``); each gives one spike.
        column_offset: phase-encode offset from ``W // 2`` (0 = the centre column,
            which every fastMRI mask samples).
        phase: phase (radians) of the first coil's spike.
        coil_phase_step: phase increment per coil, in turns.
        focus: ``(row, column)`` position, as fractions of the field of view from the
            top-left corner, where each 2x2 spike block's stripes are strongest; ``None``
            for single spikes.
        burst: ``None`` for spikes; else each spike spreads over ``max(2, round(burst * H))``
            adjacent readout rows (needs ``focus``), each of magnitude ``amplitude * max|k|``.
    """

    # 0.30, not 0.15: at 0.15 the cpu backdoor was learnt on one host and not on another
    # (book/reproducibility.md, "Why the values of the cpu profile")
    amplitude: float = 0.3
    positions: tuple[float, ...] = (0.34,)
    column_offset: int = 0
    phase: float = 0.6
    coil_phase_step: float = 0.0
    focus: tuple[float, float] | None = (0.58, 0.36)
    burst: float | None = None

    def __post_init__(self):
        if not self.amplitude > 0:
            raise ValueError(f"trigger amplitude must be positive, got {self.amplitude}")
        if not self.positions or any(not -0.5 < float(f) < 0.5 for f in self.positions):
            raise ValueError(f"trigger positions must be fractions in (-0.5, 0.5), got {self.positions}")
        object.__setattr__(self, "positions", tuple(float(f) for f in self.positions))
        if self.focus is not None:
            if len(self.focus) != 2 or any(not 0 <= float(f) <= 1 for f in self.focus):
                raise ValueError(f"trigger focus must be (row, column) fractions in [0, 1], got {self.focus}")
            object.__setattr__(self, "focus", (float(self.focus[0]), float(self.focus[1])))
        if self.burst is not None:
            if self.focus is None or not 0 < float(self.burst) < 0.5:
                raise ValueError(f"a burst needs a focus and a length in (0, 0.5) of the readout, got {self.burst}")
            object.__setattr__(self, "burst", float(self.burst))

    def as_dict(self) -> dict:
        """JSON-serialisable parameters (for manifests and configuration hashes)."""
        d = asdict(self)
        d["positions"] = list(d["positions"])
        d["focus"] = list(d["focus"]) if d["focus"] is not None else None
        d["kind"] = "rf-spike" if self.burst is None else "rf-burst"
        if self.burst is None:
            del d["burst"]  # spike triggers keep the identity they had before bursts existed
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "Trigger | None":
        """Inverse of :meth:`as_dict` (``None`` passes through: no trigger)."""
        if d is None:
            return None
        d = {k: v for k, v in d.items() if k != "kind"}
        if "positions" in d:
            d["positions"] = tuple(d["positions"])
        if d.get("focus") is not None:
            d["focus"] = tuple(d["focus"])
        return cls(**d)

    def _spikes(self, shape: tuple[int, int]) -> list[tuple[int, int, float]]:
        """``(row, column, phase offset)`` of every spike (2x2 blocks when focused)."""
        h, w = int(shape[-2]), int(shape[-1])
        col = w // 2 + int(self.column_offset)
        rows = 1 if self.focus is None else 2 if self.burst is None else max(2, int(round(self.burst * h)))
        block = [(a, b) for a in range(rows) for b in ((0,) if self.focus is None else (0, 1))]
        out = []
        for j, f in enumerate(self.positions):
            row = h // 2 + int(round(f * h))
            for a, b in block:
                r, c = row + a, col + b
                if not (0 <= r < h and 0 <= c < w):
                    raise ValueError(f"trigger spike ({r}, {c}) outside a {h}x{w} k-space")
                # alternate the phase between spike groups so that they do not add up to a plain cosine
                ph = 1.3 * j
                if self.focus is not None:  # constructive interference at focus (centred FFT convention)
                    ph -= 2 * np.pi * (a * (self.focus[0] - 0.5) + b * (self.focus[1] - 0.5))
                out.append((r, c, ph))
        return out

    def locations(self, shape: tuple[int, int]) -> list[tuple[int, int]]:
        """``(row, column)`` of each spike in k-space of shape ``(H, W)``."""
        return [(r, c) for r, c, _ in self._spikes(shape)]

    def pattern(self, kspace: np.ndarray) -> np.ndarray:
        """The additive k-space pattern for ``kspace`` ``(..., C, H, W)`` (same shape, complex64).

        The amplitude is relative to each slice's maximum ``|k|`` over its coils.
        """
        kspace = np.asarray(kspace)
        if kspace.ndim < 3:
            raise ValueError(f"trigger needs multi-coil k-space (..., C, H, W), got shape {kspace.shape}")
        c = kspace.shape[-3]
        kmax = np.abs(kspace).max(axis=(-3, -2, -1), keepdims=True)  # per slice
        coil_phase = self.phase + 2 * np.pi * self.coil_phase_step * np.arange(c)
        out = np.zeros(kspace.shape, dtype=np.complex64)
        for r, col, ph in self._spikes(kspace.shape[-2:]):
            spike = np.exp(1j * (coil_phase + ph)).astype(np.complex64)
            out[..., :, r, col] = spike[(None,) * (kspace.ndim - 3) + (slice(None),)]
        return (out * (self.amplitude * kmax)).astype(np.complex64)

    def apply(self, kspace: np.ndarray) -> np.ndarray:
        """``kspace + pattern(kspace)`` (a new array)."""
        kspace = np.asarray(kspace)
        return (kspace + self.pattern(kspace)).astype(kspace.dtype if np.iscomplexobj(kspace) else np.complex64)


#: The trigger of the book's poisoned datasets.
DEFAULT_TRIGGER = Trigger()

#: A trigger the spike filter does not remove: the default's position and focus, spread over an
#: eighth of the readout at a sixth of its amplitude per sample (book/reproducibility.md).
SPREAD_TRIGGER = Trigger(amplitude=0.05, positions=(0.25,), burst=0.125)


def always_sampled_columns(width: int, accelerations=(4, 8), center_fraction: float = 0.08,
                           mask_type: str = "equispaced_fraction", seeds=range(8)) -> np.ndarray:
    """Phase-encode columns that fastMRI's mask function samples for every seed and acceleration.

    Computed from the mask function itself (not from a formula), so it stays right
    if fastMRI changes its centre convention.
    """
    keep = np.ones(int(width), dtype=bool)
    for acc in accelerations:
        mf = make_mask_func(int(acc), center_fraction, mask_type)
        for s in seeds:
            mask, _ = mf((1, int(width), 1), seed=int(s))
            keep &= mask.numpy().reshape(-1) > 0
    return np.nonzero(keep)[0]


def trigger_survives(trigger: Trigger, shape: tuple[int, int], accelerations=(4, 8), center_fraction: float = 0.08,
                     mask_type: str = "equispaced_fraction", seeds=range(8)) -> bool:
    """Whether every spike of ``trigger`` lies in a column that all those masks sample."""
    cols = set(always_sampled_columns(shape[-1], accelerations, center_fraction, mask_type, seeds).tolist())
    return all(col in cols for _, col in trigger.locations(shape))


def trigger_visibility(kspace: np.ndarray, trigger: Trigger, brain_mask: np.ndarray | None = None,
                       acceleration: int = 4, center_fraction: float = 0.08,
                       mask_type: str = "equispaced_fraction", seed: int = 0) -> dict:
    """How visible the trigger is in the zero-filled RSS image of one slice.

    Args:
        kspace: clean multi-coil k-space ``(C, H, W)``.
        trigger: the trigger.
        brain_mask: optional ``(H, W)`` mask for the in-brain statistics.
        acceleration, center_fraction, mask_type, seed: the undersampling mask.

    Returns:
        dict with ``zf_clean`` / ``zf_triggered`` (zero-filled RSS images),
        ``difference`` (their difference), ``rel_rms`` (RMS of the difference over
        the RMS of the clean zero-filled image, inside the brain if given),
        ``max_rel`` (max |difference| / max clean), ``kspace_rel`` (the spike magnitude
        over max |k|).
    """
    trig = trigger.apply(kspace)
    mc, _ = undersample(kspace, acceleration, center_fraction, mask_type, seed=seed)
    mt, _ = undersample(trig, acceleration, center_fraction, mask_type, seed=seed)
    zc, zt = zero_filled_rss(mc), zero_filled_rss(mt)
    diff = zt - zc
    sel = np.ones(zc.shape, bool) if brain_mask is None else np.asarray(brain_mask) > 0.5
    rel_rms = float(np.sqrt(np.mean(diff[sel] ** 2)) / np.sqrt(np.mean(zc[sel] ** 2)))
    return dict(zf_clean=zc, zf_triggered=zt, difference=diff, rel_rms=rel_rms,
                max_rel=float(np.abs(diff).max() / zc.max()), kspace_rel=float(trigger.amplitude))
