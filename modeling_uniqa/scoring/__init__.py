"""Scoring images with a UniQA model: inputs and views, the scorer, result writers, and the
front ends for image files, WebDataset tar shards, `datasets` datasets and Ray Data."""
