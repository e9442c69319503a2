"""The client API: Client, JobHandle."""

from .client import Client, JobHandle

__all__ = ["Client", "JobHandle"]
