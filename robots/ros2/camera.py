"""An inspection camera over ROS 2: the newest ``sensor_msgs/Image`` on a topic.

A camera driver publishes on the topic; :meth:`RosImageSource.grab` returns the first image that
arrives after the call (a part is judged on what the camera sees now, not on the last image of
the previous part), or raises :class:`~policies.vision.VisionError` when none arrives in time
(the camera stopped publishing) or the message is not an image we can read (an encoding we do
not know, or a size that does not match its data). Images are data: nothing in one is trusted
beyond its pixels.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from policies.vision import Image, VisionError
from robots.ros2._host import RosHost

#: Cameras publish best-effort; a reliable reader would not match them.
CAMERA_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
ENCODINGS = {"rgb8": (3, False), "bgr8": (3, True), "rgba8": (4, False), "bgra8": (4, True), "mono8": (1, False)}
#: Larger images are refused (a 4K colour frame is 25 MB): an inspection camera is not a video feed.
MAX_PIXELS = 4096 * 4096


def image_from_msg(msg: Any) -> Image:
    """A ``sensor_msgs/Image`` as a uint8 ``[H, W, 3]`` RGB array, or VisionError saying why not."""
    enc = str(msg.encoding).lower()
    if enc not in ENCODINGS:
        raise VisionError(f"image encoding {enc!r} is not one of {', '.join(ENCODINGS)}")
    channels, bgr = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise VisionError(f"the image is empty ({w}x{h})")
    if h * w > MAX_PIXELS:
        raise VisionError(f"the image is {w}x{h}, larger than an inspection camera's")
    data = bytes(msg.data)
    if step < w * channels or len(data) != h * step:
        raise VisionError(f"the image's data ({len(data)} bytes) does not match {w}x{h} {enc} with step {step}")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(h, step)[:, : w * channels]
    img = rows.reshape(h, w, channels)
    if channels == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[:, :, :3]
    if bgr:
        img = img[:, :, ::-1]
    return np.ascontiguousarray(img)


class RosImageSource:
    """The images of a ``sensor_msgs/Image`` topic (see the module's docstring)."""

    def __init__(self, topic: str, host: RosHost | None = None, domain_id: int | None = None) -> None:
        from sensor_msgs.msg import Image as ImageMsg

        self.topic = topic
        self._own = host is None
        self._host = host or RosHost(domain_id)
        self._cond = threading.Condition()
        self._latest: Any = None
        self._count = 0
        node = self._host.node("inspection_camera")
        self._sub = node.create_subscription(ImageMsg, topic, self._on_image, CAMERA_QOS)

    def _on_image(self, msg: Any) -> None:
        with self._cond:
            self._latest = msg
            self._count += 1
            self._cond.notify_all()

    def grab(self, timeout_s: float) -> Image:
        with self._cond:
            seen = self._count
            if not self._cond.wait_for(lambda: self._count > seen, timeout_s):
                raise VisionError(
                    f"no image on {self.topic} within {timeout_s:g} s (has the camera stopped publishing?)"
                )
            msg = self._latest
        return image_from_msg(msg)

    def close(self) -> None:
        if self._own:
            self._host.close()
