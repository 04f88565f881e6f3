"""Evaluation: image metrics, the chapters' tables, and the findings written from them."""
