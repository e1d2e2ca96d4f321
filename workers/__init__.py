"""aotune.workers: a tuning-agnostic Ray pool of GPU actors (one per GPU) and CPU tasks.

The workers run the callables the tuner hands them and stream their results back, tagged with host and
actor. They know nothing of tuning and import nothing else of aotune.
"""
