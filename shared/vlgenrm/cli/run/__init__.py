"""`vlgenrm run`: the whole loop on one machine (``app``: synthetic data, the embedded base, chained
Iterations per arm and seed on the local driver) and the report of what the method bought
(``report``). A shell: it drives the core and the core never imports it."""
