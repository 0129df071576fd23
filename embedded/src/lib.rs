//! The doorway access server on embassy-net sockets (no_std).
