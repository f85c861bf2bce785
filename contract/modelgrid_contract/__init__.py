"""The contract between the benchmark and the operator, owned by neither. Pure: needs only pydantic.

* `modelgrid_contract.workload`: the declared workload and its digest;
* `modelgrid_contract.result`: the full and compact result models, flags and refusals;
* `modelgrid_contract.wire`: the termination-message encoding and its validating decoder;
* `modelgrid_contract.reasons`: exit codes and the single vocabulary of reasons.

Nothing here imports numpy, NVML, Kubernetes or either component; an import-linter contract
keeps it that way.
"""
