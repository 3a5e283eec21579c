"""What a local input file is, read from its contents: the release of its trees."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

from atlaspipe.errors import InputError
from atlaspipe.io.reading import open_file
from atlaspipe.physics.catalog import RELEASES, load_release
from atlaspipe.physics.selection import required_branches

log = logging.getLogger(__name__)


def release_of_file(location: str) -> str | None:
    """The release a local ROOT file's trees belong to, or None when it cannot tell.

    A file that cannot be opened is not this function's to report: planning opens it again and
    names the problem (or, for a partial run, leaves the file out), so here it is only "unknown".
    Remote files are judged by their names; opening each one here would cost a round trip more.
    """
    if "://" in location:
        return None
    try:
        handle = open_file(location)
        trees = {key.split(";")[0]: handle[key].keys() for key, kind in handle.classnames().items()
                 if kind == "TTree"}
    except InputError:
        return None
    except Exception as exc:  # a damaged directory or tree surfaces as many types; planning reports it
        log.debug("%s: cannot list its trees (%s); judged by its name", location, type(exc).__name__)
        return None
    return release_of_trees(trees)


def release_of_trees(trees: Mapping[str, Collection[str]]) -> str | None:
    """The release whose tree a file holds, from its TTrees and their branches; None if no release's.

    The tree name decides (``mini`` 2020, ``analysis`` 2025e); should a file hold both, the tree
    holding every branch the release's analysis reads does.
    """
    candidates = [name for name in RELEASES if load_release(name).tree in trees]
    if len(candidates) > 1:
        complete = [name for name in candidates
                    if set(required_branches(load_release(name).schema, False)) <= set(trees[load_release(name).tree])]
        candidates = complete or candidates
    return candidates[0] if candidates else None
