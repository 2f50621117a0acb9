"""``make bench``: what one chunk's control plane costs with tpwire, with what Scope runs
today (the compat wire), with a vLLM-style pickled-metadata broadcast, and at the floor (one
broadcast of exactly the tensor bytes), measured side by side in one run."""
