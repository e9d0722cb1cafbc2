"""Models: where versions live (the store over ``blobs``), the node-local weights cache,
manifests, the architecture allowlist, rebuilding without pickle, and load status."""
