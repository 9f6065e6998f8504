"""InferenceKey worker agent.

Runs on every GPU host, pulls its desired replica list from the control plane and
supervises the engine processes (see ``PROTOCOL.md``). Standard library + ``httpx`` only:
nothing here may import Django or other packages of this repository.
"""

__version__ = "0.1.0"
AGENT_VERSION = __version__
