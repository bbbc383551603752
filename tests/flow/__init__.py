"""The whole dataflow in-process: outputs, bad input, incidents, layouts, the README's example."""
