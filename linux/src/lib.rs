//! The doorway access server on Linux epoll threads.
