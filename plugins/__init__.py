"""Built-in genrec-bench plugins, one folder each, registered through the ``genrec_bench`` entry points."""
