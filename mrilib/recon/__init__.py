"""Reconstruction: the E2E VarNet and its classical baselines.

- :mod:`mrilib.recon.train` - :func:`~mrilib.recon.train.training_config`, ``train``, ``train_or_load``;
- :mod:`mrilib.recon.steps` - the loss, one optimiser step, validation, the learning-rate schedule;
- :mod:`mrilib.recon.checkpoints` - ``last.pt`` / ``best.pt`` / ``history.json``, ``load_model``;
- :mod:`mrilib.recon.distributed` - the processes of a DDP run;
- :mod:`mrilib.recon.baselines` - zero-filled and CG-SENSE reconstructions;
- ``python -m mrilib.recon`` (:mod:`mrilib.recon.__main__`) - train from the command line, DDP under torchrun.
"""
