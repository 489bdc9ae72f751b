"""Which shared files the backend can use, and how: plain tables, no SDK.

file_search indexes documents and code; code_interpreter reads data files; vision models look at
images. (OpenAI's lists of supported file types, trimmed to what people share in Slack.)
"""

from __future__ import annotations

from pathlib import PurePosixPath

# fmt: off
SEARCHABLE = frozenset({
    ".c", ".cpp", ".cs", ".css", ".csv", ".doc", ".docx", ".go", ".html", ".java", ".js",
    ".json", ".md", ".pdf", ".php", ".pptx", ".py", ".rb", ".sh", ".tex", ".ts", ".txt",
})
DATA = frozenset({".csv", ".tsv", ".xlsx", ".xls", ".json", ".xml", ".parquet", ".txt"})
IMAGES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
# fmt: on
# Models that take no images (older chat models); every other model is assumed to take them.
TEXT_ONLY_MODELS = ("gpt-3.5", "gpt-4-0", "gpt-4-32k", "o1-mini", "o3-mini")


def extension(name: str) -> str:
    return PurePosixPath(name).suffix.lower()


def is_searchable(name: str) -> bool:
    return extension(name) in SEARCHABLE


def is_data(name: str) -> bool:
    return extension(name) in DATA


def is_image(name: str, mimetype: str) -> bool:
    return extension(name) in IMAGES or mimetype in ("image/png", "image/jpeg", "image/gif")


def takes_images(model: str) -> bool:
    return model != "gpt-4" and not model.startswith(TEXT_ONLY_MODELS)
