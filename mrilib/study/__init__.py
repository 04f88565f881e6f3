"""The unlearning study, in the order it runs:

- :mod:`mrilib.study.plan` - which runs (methods, hyper-parameters, fractions, seeds);
- :mod:`mrilib.study.sets` - the forget and retain sets of an identified fraction;
- :mod:`mrilib.study.references` - the poisoned run and the retrained references (``oracle``, ``rewod``);
- :mod:`mrilib.study.execute` - the defender's signals and the cached runs;
- :mod:`mrilib.study.results` - healing, cost and the results table;
- :mod:`mrilib.study.pool` - the same work in parallel worker processes;
- :mod:`mrilib.study.diagnose` - the dose-response diagnosis of SSD.
"""
