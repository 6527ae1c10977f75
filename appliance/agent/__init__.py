"""The node agent: runs on each GPU host and reports to the control plane."""
