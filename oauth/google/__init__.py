"""Everything that talks to Google's OAuth endpoints (consent, token, revoke, userinfo) lives here."""
