"""Interoperation with other libraries: diffusers model folders read as runs (``diffusers_in``)."""
