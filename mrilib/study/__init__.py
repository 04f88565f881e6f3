"""The unlearning study: which runs, the forget/retain sets and retrain references, executing and caching runs,
the worker pool, and the dose-response diagnosis."""
