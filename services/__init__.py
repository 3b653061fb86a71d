"""Stage services (experts, rationale, sampler, trainer, scorer): thin shells over the core.

Installed as ``vlgenrm.services``; each service is a subpackage that wires a Bus consumer to
library code. See docs/layout.md.
"""
