"""Layer 6, the public API's home: preflight, launching a run, and the calls and result object that ``cluster``
re-exports."""
