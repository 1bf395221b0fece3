"""The single- vs multi-task transfer study: run matrix (``study``) and report (``report``)."""
