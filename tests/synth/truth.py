"""An independent truth checker for claims about a scene (kept apart from the library's
``claim_holds`` so the two can check each other)."""

from __future__ import annotations

from vlgenrm.contracts import Claim, ClaimType
from vlgenrm.synth.scene import Scene


def is_true(claim: Claim, scene: Scene) -> bool:
    if claim.type is ClaimType.TEXT:
        return scene.sign == claim.text
    if claim.subject == "text":
        assert claim.type is ClaimType.NEGATED_EXISTENCE
        return scene.sign is None
    same = [o for o in scene.objects if o.shape == claim.subject and claim.attribute in (None, o.colour)]
    if claim.type is ClaimType.EXISTENCE:
        return bool(same)
    if claim.type is ClaimType.NEGATED_EXISTENCE:
        return not same
    if claim.type is ClaimType.COUNT:
        return sum(o.count for o in same) == claim.count
    raise AssertionError(f"unexpected claim type {claim.type}")
