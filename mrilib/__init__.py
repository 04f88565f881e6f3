"""mrilib: the helper package behind *Corrective Machine Unlearning for MRI Reconstruction*.

Laid out like the pipeline, each layer importing only the ones before it:

- :mod:`mrilib.config` - the named run profiles and their typed sub-configurations;
- :mod:`mrilib.run` - the run layer: every path of a run, identities, the cached step, I/O, progress;
- :mod:`mrilib.data` - the embedded brain dataset, coils, k-space, real-dataset readers, artefacts;
- :mod:`mrilib.models` - the networks (VarNet factory, lesion classifier, CycleGAN);
- :mod:`mrilib.recon` - VarNet training, checkpoints, distributed training, classical baselines;
- :mod:`mrilib.poison` - lesions, triggers, the judge, the CycleGAN, poison recipes, poisoned sets, the effect;
- :mod:`mrilib.attacks` - the adversarial tumour-induction objective and the k-space stress test;
- :mod:`mrilib.unlearn` - the unlearning algorithms (SSD and its variants, gradient baselines);
- :mod:`mrilib.study` - chapter 5's plan, references, cached runs and worker pool;
- :mod:`mrilib.evaluate` - metrics, tables and the findings written from them;
- :mod:`mrilib.viz` - figures and widgets, one module per chapter;
- :mod:`mrilib.book` - the papermill pipeline, the HTML build and the README's results.
"""

__version__ = "0.1.0"
