"""``fastgan bench``: the benchmark suite (cases in :mod:`.cases`, timing method in :mod:`.timing`, the command
and its reports in :mod:`.cli`). ``_allocator`` (compiled, optional) is the caching CPU allocator behind
``--cpu-allocator caching``; nothing else loads it."""
from .cli import add_parser, run_suite  # noqa: F401
