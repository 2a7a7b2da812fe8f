//! End-to-end and interop tests of Portway live in `tests/`; this library holds their shared helpers.
