"""``$(VAR)`` references in container commands, args and env values, as the kubelet
expands them (third_party/forked/golang/expansion/expand.go, used by
pkg/kubelet/container/helpers.go ExpandContainerCommandAndArgs and by
pkg/kubelet/kubelet_pods.go makeEnvironmentVariables).

- ``$(NAME)`` becomes the value of NAME when it is defined, else stays ``$(NAME)``;
- ``$$`` is an escaped ``$``: ``$$(NAME)`` becomes the literal ``$(NAME)``;
- a ``$`` followed by anything else, or an unclosed ``$(``, is kept as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence


def mapping_for(*contexts: Mapping[str, str]) -> Callable[[str], str]:
    """The lookup the kubelet uses: the first context that defines the name wins; an
    undefined name is written back in the reference syntax."""

    def lookup(name: str) -> str:
        for ctx in contexts:
            if name in ctx:
                return ctx[name]
        return f"$({name})"

    return lookup


def _read_reference(rest: str) -> tuple[str, bool, int]:
    """What follows a ``$``: (text read, whether it is a variable name, bytes consumed)."""
    first = rest[0]
    if first == "$":
        return "$", False, 1
    if first == "(":
        close = rest.find(")", 1)
        if close != -1:
            return rest[1:close], True, close + 1
        return "$(", False, 1
    return "$" + first, False, 1


def expand(text: str, lookup: Callable[[str], str]) -> str:
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_var, advance = _read_reference(text[cursor + 1 :])
            out.append(lookup(read) if is_var else read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def expand_all(items: Sequence[str] | None, lookup: Callable[[str], str]) -> list[str]:
    return [expand(item, lookup) for item in items or ()]
