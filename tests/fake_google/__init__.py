"""The project's own fake Google: OAuth consent, token, revoke, userinfo, Gmail and Calendar."""
from .server import ConsentPlan, FakeGoogle

__all__ = ["ConsentPlan", "FakeGoogle"]
