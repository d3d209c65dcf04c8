"""A local web page where people label preference queries of a label store (`robotrl label`).

`LabelServer`/`serve` run the page; `create_app` builds the Flask app; `SegmentVideos` renders stored segments to
cached WebM videos from their recorded simulator states.
"""

from robotrl.labelling.server import LabelServer, create_app, serve
from robotrl.labelling.videos import SegmentVideos, VideoUnavailable

__all__ = ["LabelServer", "SegmentVideos", "VideoUnavailable", "create_app", "serve"]
