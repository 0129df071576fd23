//! A blocking PROTOCOL.md client and the protocol conformance suite shared by every server target.
