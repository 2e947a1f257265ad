"""The names of the three splits, in order.

A module of its own so that the prepared data (:mod:`pipeline.data.prepared`, which every network
stage reads) does not import the corpus sources: adding a source to :mod:`pipeline.data.corpus`
then reruns ``corpus`` and ``prepare`` only, not every training stage (DVC deps follow imports).
"""
SPLITS = ("train", "valid", "test")
