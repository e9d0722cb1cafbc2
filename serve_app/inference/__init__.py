"""Inference: the detector deployment, its batcher, image checks, letterbox, annotation,
results, the detection policy and tenants' own defaults, the catalog (which model a call
uses), and the router's client of the detectors."""
