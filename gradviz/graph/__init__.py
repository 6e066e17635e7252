"""The traced graph and questions about it: `Graph`/`Node` (model), `capture`/`trace`
(tracing), module paths, runs of repeated blocks, tensor statistics, search and inspection,
the forward (module) view and the diff of two runs. Nothing here draws."""
