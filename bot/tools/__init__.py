"""Function tools: `tool` declares one, `ToolRegistry` runs them (the core's ToolBox)."""

from bot.tools.registry import Tool, ToolContext, ToolLoadError, ToolRegistry, tool

__all__ = ["Tool", "ToolContext", "ToolLoadError", "ToolRegistry", "tool"]
