"""Attacks on a trained reconstruction model: the adversarial tumour-induction objective and the k-space stress test."""
