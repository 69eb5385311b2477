import av
import numpy as np
import pytest

from omni_rtc.media.jpeg import InvalidImage, JpegEncoder, JpegLimits, fit_within, inspect_jpeg


def natural_frame(width: int, height: int) -> av.VideoFrame:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x // 40 + y // 40) % 2 * 200], axis=-1)
    return av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")


def noise_frame(width: int, height: int, seed: int = 1) -> av.VideoFrame:
    rng = np.random.default_rng(seed)
    return av.VideoFrame.from_ndarray(
        rng.integers(0, 255, (height, width, 3), dtype=np.uint8), format="rgb24"
    )


def test_fit_within_keeps_aspect_and_never_upscales() -> None:
    assert fit_within(1920, 1080, 1280, 720) == (1280, 720)
    assert fit_within(640, 480, 1280, 720) == (640, 480)
    assert fit_within(1080, 1920, 1280, 720) == (404, 720)
    assert fit_within(4000, 3000, 1920, 1080) == (1440, 1080)


def gradient_frame(width: int, height: int) -> av.VideoFrame:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, 255 - x * 255 // width], axis=-1)
    return av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")


def test_encoded_jpeg_decodes_with_right_size_and_colours() -> None:
    image = JpegEncoder().encode(gradient_frame(1920, 1080))
    assert image.data[:2] == b"\xff\xd8"
    assert (image.width, image.height) == (1280, 720)
    assert inspect_jpeg(image.data) == (1280, 720)
    decoded = (
        av.CodecContext.create("mjpeg", "r")
        .decode(av.Packet(image.data))[0]
        .to_ndarray(format="rgb24")
    )
    reference = gradient_frame(1280, 720).to_ndarray(format="rgb24")
    assert (
        np.mean(np.abs(decoded.astype(int) - reference.astype(int))) < 6
    )  # full range, not washed out


@pytest.mark.parametrize("budget", [180_000, 60_000, 20_000])
def test_byte_budget_is_met_even_for_noise(budget: int) -> None:
    encoder = JpegEncoder(JpegLimits(max_bytes=budget))
    for seed in range(3):
        image = encoder.encode(noise_frame(1280, 720, seed))
        assert len(image.data) <= budget
        assert inspect_jpeg(image.data) == (image.width, image.height)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="1920x1080"):
        JpegLimits(max_width=3840, max_height=2160)
    with pytest.raises(ValueError, match="500000"):
        JpegLimits(max_bytes=600_000)


@pytest.mark.parametrize("data", [b"", b"GIF89a....", b"\xff\xd8\xff\xe0 garbage garbage"])
def test_inspect_rejects_non_jpeg(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        inspect_jpeg(data)


def flat_frame(width: int, height: int, level: int) -> av.VideoFrame:
    rgb = np.full((height, width, 3), level, dtype=np.uint8)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24")


def test_one_encoder_encodes_frame_after_frame_each_image_its_own() -> None:
    """The encoder keeps its mjpeg context between images: every image is still whole
    (decodes alone) and shows its own frame, also across a change of size."""
    encoder = JpegEncoder()
    sizes = [(640, 480)] * 4 + [(320, 240), (640, 480)]
    for i, (width, height) in enumerate(sizes):
        level = 30 + 40 * i
        image = encoder.encode(flat_frame(width, height, level))
        assert (image.width, image.height) == (width, height)
        decoded = (
            av.CodecContext.create("mjpeg", "r")
            .decode(av.Packet(image.data))[0]
            .to_ndarray(format="rgb24")
        )
        assert abs(float(decoded.mean()) - level) < 3
