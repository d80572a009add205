"""Branch handlers that database rows name; the registry exposes only what this package lists."""

from handlers.global_actions import GlobalActions
from handlers.processors import Processors

# The whole `code:` namespace: a class not listed here cannot be named by a database row.
CODE_NAMESPACE: dict[str, type] = {"GlobalActions": GlobalActions, "Processors": Processors}

__all__ = ["CODE_NAMESPACE", "GlobalActions", "Processors"]
