"""The inspection camera over ROS 2: a camera driver in another process publishes
sensor_msgs/Image; the source reads its pixels, refuses a message that is not an image, and
says so when the camera stops publishing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from policies.vision import VisionError
from robots.ros2._host import RosHost
from robots.ros2.camera import RosImageSource, image_from_msg

_CAMERA = textwrap.dedent(
    """
    import sys, time
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node("fake_camera_driver")
    pub = node.create_publisher(Image, "/insp_1/image", QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT))
    mode, seconds = sys.argv[1], float(sys.argv[2])
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        msg = Image()
        msg.height, msg.width, msg.encoding = 4, 6, "bgr8"
        msg.step = 6 * 3
        # blue, green, red in the first three pixels of every row; the rest grey
        row = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255] + [128] * 9)
        msg.data = row * 4 if mode == "good" else row * 3  # corrupt: a row short
        pub.publish(msg)
        i += 1
        time.sleep(0.05)
    node.destroy_node()
    rclpy.shutdown()
    """
)


def _camera(mode: str, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _CAMERA, mode, str(seconds)])


def test_images_arrive_and_a_silent_camera_is_an_error() -> None:
    host = RosHost()
    source = RosImageSource("/insp_1/image", host)
    cam = _camera("good", 12.0)
    try:
        img = source.grab(20.0)  # discovery on a loaded machine may take seconds
        assert img.shape == (4, 6, 3) and img.dtype == np.uint8
        # bgr8 on the wire, RGB out: red, green, blue
        assert (
            img[0, 0].tolist() == [0, 0, 255]
            and img[0, 1].tolist() == [0, 255, 0]
            and img[0, 2].tolist() == [255, 0, 0]
        )
        cam.wait(30)
        t0 = time.monotonic()
        with pytest.raises(VisionError, match=r"no image on /insp_1/image within 0\.5 s.*stopped publishing"):
            source.grab(0.5)
        assert time.monotonic() - t0 < 5.0
    finally:
        cam.kill()
        cam.wait(5)
        host.close()


def test_a_corrupt_image_message_is_refused() -> None:
    host = RosHost()
    source = RosImageSource("/insp_1/image", host)
    cam = _camera("corrupt", 12.0)
    try:
        with pytest.raises(VisionError, match=r"data \(54 bytes\) does not match 6x4 bgr8"):
            source.grab(20.0)
    finally:
        cam.kill()
        cam.wait(5)
        host.close()


def test_image_messages_are_checked_before_their_pixels_are_read() -> None:
    from sensor_msgs.msg import Image

    def msg(**kw: object) -> Image:
        m = Image()
        m.height, m.width, m.encoding, m.step = 2, 2, "rgb8", 6
        m.data = bytes(12)
        for k, v in kw.items():
            setattr(m, k, v)
        return m

    assert image_from_msg(msg()).shape == (2, 2, 3)
    assert image_from_msg(msg(encoding="mono8", step=2, data=bytes([7, 8, 9, 10]))).tolist()[1][1] == [10, 10, 10]
    for bad, reason in [
        (msg(encoding="32FC1"), "encoding '32fc1' is not one of"),
        (msg(height=0, data=b""), "empty"),
        (msg(width=100000, height=100000), "larger than"),
        (msg(step=2), "does not match"),
    ]:
        with pytest.raises(VisionError, match=reason):
            image_from_msg(bad)
