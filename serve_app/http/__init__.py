"""HTTP: the router deployment (the ingress), its route table, request bodies,
readiness, the call log, and the web console's static files."""
