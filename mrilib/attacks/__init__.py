"""Attacks on images and on trained reconstruction models: the tumour-induction objective
(:mod:`~mrilib.attacks.objective`, with its differentiable pieces and universal patterns) and the k-space
stress test (:mod:`~mrilib.attacks.stress`). They use the poisoning chapter's judge and tumour region
(:mod:`mrilib.poison.judge`, :mod:`mrilib.poison.roi`); of the poisoning code only the ``adversarial-tumour``
recipe uses them.
"""
