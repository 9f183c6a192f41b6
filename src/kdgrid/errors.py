"""The one exception type kdgrid raises for bad input; the CLI prints it without a traceback."""


class KdgridError(Exception):
    """A user-facing error: its message names the file, key or value at fault."""


def unknown(kind: str, name: object, known) -> KdgridError:
    """An error for an unknown name that lists the known ones."""
    return KdgridError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(map(str, known)))}")
