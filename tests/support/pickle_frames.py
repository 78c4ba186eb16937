"""What carbon's clients send to a pickle receiver, for the tests to send: length-prefixed frames.

The gateway only reads frames (``turok_core.parse.carbon_pickle``); writing them is the client's side.
"""
from __future__ import annotations

import pickle
from typing import Sequence

from turok_core.parse.carbon_pickle import HEADER


def encode_frame(points: Sequence, protocol: int = 2) -> bytes:
    """A frame as carbon's clients send it: length prefix and pickle of ``points``."""
    body = pickle.dumps(list(points), protocol=protocol)
    return HEADER.pack(len(body)) + body
