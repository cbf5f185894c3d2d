"""Files: uploaded batch inputs and generated batch results (``/v1/files``)."""
