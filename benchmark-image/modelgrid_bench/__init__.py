"""modelgrid_bench: measures the power stability of an LLM under a declared inference workload.

The package runs real inference while it samples the GPU through NVML, analyses the trace with
pure numpy functions and reports a versioned result (`modelgrid_contract`) that the
modelgrid operator reads from the benchmark pod's termination message. No I/O at import time.
"""

__version__ = "0.1.0"
