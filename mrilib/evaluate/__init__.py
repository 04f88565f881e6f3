"""Evaluation: image metrics, the chapters' tables, the findings written from them, and the README report."""
