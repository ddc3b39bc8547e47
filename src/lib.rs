//! Host package for the workspace integration tests in `tests/`.
