"""dtrain_tools: the project's Python helpers (goldens, PyTorch references, benchmarks, plots,
result tables, dataset packing) as one package. Run a task with `tools/dtrain-tool TASK ...`."""
