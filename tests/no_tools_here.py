"""A module named as TOOLS_MODULE by mistake: it declares no tools."""

VALUE = 1
