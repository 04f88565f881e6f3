"""mrilib: the helper package behind *Corrective Machine Unlearning for MRI Reconstruction*.

One idea per module:

- :mod:`mrilib.config` - the named run profiles (``smoke``, ``cpu``, ``gpu``);
- :mod:`mrilib.data` - the embedded brain dataset, coil maps, k-space simulation,
  the fastMRI HDF5 layout, loaders for real datasets;
- :mod:`mrilib.run.io` - atomic writes and run directories;
- :mod:`mrilib.viz.data` / :mod:`mrilib.viz.widgets` - figures and notebook browsers;
- :mod:`mrilib.book.pipeline` - executes the notebooks with papermill and builds the book.
"""

__version__ = "0.1.0"
