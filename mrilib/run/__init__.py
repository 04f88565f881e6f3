"""The run layer: every path of a run, one way to identify what a step computed, one cached step.

- :mod:`mrilib.run.layout` - :class:`RunLayout`, every path under ``runs/<profile>/``;
- :mod:`mrilib.run.cache` - canonical configurations, digests of data and weights, :func:`cached_step`;
- :mod:`mrilib.run.io` - atomic writes and JSON;
- :mod:`mrilib.run.progress` - progress bars for notebooks and batch runs.
"""
