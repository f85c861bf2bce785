# The Text Generation Inference engine image: the engine's own image with the benchmark installed, so that the
# benchmark starts the engine as its child process in the same container, on the GPUs it
# measures (docs/measurement.md, "The in-pod serving engine"). The Job names the benchmark
# as the command (python -m modelgrid_bench); the engine's entrypoint is not used.
# Build from the repository root:
#   docker build -f benchmark-image/engines/tgi.Dockerfile -t modelgrid-bench-tgi .
# It runs under Pod Security "restricted": a numeric non-root user, no privilege, a read-only
# root file system with /results, /tmp and /dev/shm as writable volumes.
ARG BASE=ghcr.io/huggingface/text-generation-inference:3.3.6
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/models/hf \
    HOME=/tmp \
    MODELGRID_OUTPUT_DIR=/results/evidence \
    MODELGRID_TERMINATION_LOG=/dev/termination-log

WORKDIR /opt/modelgrid
COPY pyproject.toml README.md ./
COPY contract/modelgrid_contract ./contract/modelgrid_contract
COPY benchmark-image/modelgrid_bench ./benchmark-image/modelgrid_bench
# The benchmark only (the engine brings torch): '.[bench]' adds numpy, httpx and NVML. The
# deprecated pynvml shim must not shadow nvidia-ml-py's module.
RUN pip install --no-cache-dir '.[bench]' \
 && (pip uninstall -y pynvml || true) \
 && python -c "import modelgrid_bench.cli" \
 && text-generation-launcher --version

RUN mkdir -p /results /models && chown 65532:65532 /results
USER 65532:65532
WORKDIR /results
ENTRYPOINT ["python", "-m", "modelgrid_bench"]
CMD ["--help"]
