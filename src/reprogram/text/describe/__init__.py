"""Class descriptions for DVP-cse, DVP-cls and AttrVR: generate with an LLM, template, check."""

from reprogram.text.describe.check import CheckReport, FileReport, check_descriptions, check_file
from reprogram.text.describe.classes import read_class_list
from reprogram.text.describe.client import (
    AuthenticationError,
    ChatClient,
    Completion,
    EndpointError,
    Usage,
)
from reprogram.text.describe.generate import (
    GenerationResult,
    ProgressInfo,
    Sampling,
    generate_descriptions,
)
from reprogram.text.describe.prompts import (
    CAUSE_PROMPT,
    DESCRIPTIVE_PROMPT,
    DISTINCTIVE_PROMPT,
    PromptSet,
)
from reprogram.text.describe.templates import template_descriptions

__all__ = [
    "CAUSE_PROMPT",
    "DESCRIPTIVE_PROMPT",
    "DISTINCTIVE_PROMPT",
    "AuthenticationError",
    "ChatClient",
    "CheckReport",
    "Completion",
    "EndpointError",
    "FileReport",
    "GenerationResult",
    "ProgressInfo",
    "PromptSet",
    "Sampling",
    "Usage",
    "check_descriptions",
    "check_file",
    "generate_descriptions",
    "read_class_list",
    "template_descriptions",
]
