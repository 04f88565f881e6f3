"""Figures and ipywidgets browsers, one module per chapter (matplotlib; titled axes, labelled colour bars)."""
