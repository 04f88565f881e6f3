"""Reconstruction: the E2E VarNet training loop, its checkpoints, and the classical baselines."""
