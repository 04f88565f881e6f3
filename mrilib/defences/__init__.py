"""Defences a data owner can run without knowing the poison: input sanitisation at inference
(:mod:`~mrilib.defences.spikes`, RF-spike detection and replacement in k-space)."""
