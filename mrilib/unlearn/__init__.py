"""Corrective unlearning for VarNet: the algorithms only (no study, no evaluation).

- :mod:`mrilib.unlearn.methods` - the one interface, ``unlearn(name, model, forget, retain, **hp)``,
  and :data:`~mrilib.unlearn.methods.METHODS`, where every method is registered;
- :mod:`mrilib.unlearn.base` - inputs, cost accounting (slice-passes), batches, the result;
- :mod:`mrilib.unlearn.ssd` - Selective Synaptic Dampening and its variants (label-free, automatic α,
  tuned, region-targeted);
- :mod:`mrilib.unlearn.gradient` - fine-tuning, noisy labels, gradient ascent, Bad Teacher;
- :mod:`mrilib.unlearn.regions` - where an identified label disagrees with its own k-space.
"""
