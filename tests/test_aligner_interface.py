"""The word-aligner interface (xbench/aligners/base.py)."""
import pytest

from xbench.aligners import AlignmentSet, WordAligner
from xbench.errors import XbenchError


class _Diagonal:
    name = "diagonal"

    def align(self, pairs):
        out = []
        for src, tgt in pairs:
            links = tuple((i, i) for i in range(min(len(src), len(tgt))))
            out.append(AlignmentSet(links, links, links))
        return out

    def fingerprint(self):
        return {"backend": self.name}


def test_a_backend_satisfies_the_protocol_and_its_links_are_checked():
    aligner = _Diagonal()
    assert isinstance(aligner, WordAligner)
    (links,) = aligner.align([(["a", "b"], ["x", "y", "z"])])
    links.check(2, 3)
    with pytest.raises(XbenchError, match=r"forward links \[\(2, 0\)\] lie outside a pair of 2 source"):
        AlignmentSet(((2, 0),), (), ()).check(2, 3)
    assert not isinstance(object(), WordAligner)
