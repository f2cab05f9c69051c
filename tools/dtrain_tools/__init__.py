"""dtrain_tools: the project's Python helpers (goldens, PyTorch references, benchmarks, plots,
result tables, dataset packing) as one package. Run a task with `tools/dtrain-tool TASK ...`.

Each task is a module of this package with a main(argv) taking the task's arguments and
returning the exit status: task foo-bar is module dtrain_tools.foo_bar, so a new module needs
no other change to be a task. Modules import their siblings as `from dtrain_tools import x`.
"""
import os

# The root of the dtrain checkout this package lives in (tools/dtrain_tools/..).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
