#!/usr/bin/env python3
"""A mixed-format upload set like real users send, made from the sample
photos: 100 images in ten encodings at several sizes.

    python benches/ort/make_bench_set.py OUT_DIR [--count 100]

Encodings (one in ten each): baseline JPEG, progressive JPEG, CMYK JPEG,
RGBA PNG, palette PNG, lossy WebP, BMP, LZW TIFF, grayscale GIF, and JPEGs
upscaled 2x (a phone's digital zoom). Sizes cycle from thumbnails to 12
megapixel photos. Each source image is varied (crop, mirror) so no two
files are the same. `cargo bench --bench pipeline` runs this with the
Python it is given (Pillow from benches/ort/requirements.txt).
"""

import argparse
import os

from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SOURCES = ["chelsea.jpg", "coffee.png", "camera.png"]
# Longer side in pixels: thumbnails, web images, laptop screens, phone photos.
SIZES = [320, 480, 640, 800, 1024, 1280, 1600, 2048, 3000, 4000]


def save(image, path, encoding):
    rgb = image.convert("RGB")
    if encoding == "baseline.jpg":
        rgb.save(path, "JPEG", quality=90)
    elif encoding == "progressive.jpg":
        rgb.save(path, "JPEG", quality=85, progressive=True, optimize=True)
    elif encoding == "cmyk.jpg":
        rgb.convert("CMYK").save(path, "JPEG", quality=90)
    elif encoding == "rgba.png":
        rgba = rgb.convert("RGBA")
        alpha = Image.linear_gradient("L").resize(rgba.size)
        rgba.putalpha(alpha.point(lambda v: 128 + v // 2))
        rgba.save(path, "PNG")
    elif encoding == "palette.png":
        rgb.quantize(colors=256).save(path, "PNG")
    elif encoding == "lossy.webp":
        rgb.save(path, "WEBP", quality=80)
    elif encoding == "plain.bmp":
        rgb.save(path, "BMP")
    elif encoding == "lzw.tiff":
        rgb.save(path, "TIFF", compression="tiff_lzw")
    elif encoding == "gray.gif":
        rgb.convert("L").save(path, "GIF")
    elif encoding == "upscaled.jpg":
        big = rgb.resize((rgb.width * 2, rgb.height * 2), Image.BICUBIC)
        big.save(path, "JPEG", quality=88)
    else:
        raise ValueError(encoding)


ENCODINGS = [
    "baseline.jpg",
    "progressive.jpg",
    "cmyk.jpg",
    "rgba.png",
    "palette.png",
    "lossy.webp",
    "plain.bmp",
    "lzw.tiff",
    "gray.gif",
    "upscaled.jpg",
]


def variant(source, index, longer):
    """The source photo cropped a little differently each time, sometimes
    mirrored, scaled so its longer side is `longer` pixels."""
    width, height = source.size
    trim = (index * 7) % 12  # percent trimmed, spread over the edges
    left = width * trim // 200
    top = height * ((index * 5) % 12) // 200
    cropped = source.crop((left, top, width - left, height - top))
    if index % 2:
        cropped = ImageOps.mirror(cropped)
    scale = longer / max(cropped.size)
    size = (max(1, round(cropped.width * scale)), max(1, round(cropped.height * scale)))
    return cropped.resize(size, Image.LANCZOS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    sources = [Image.open(os.path.join(ROOT, "tests", "samples", name)) for name in SOURCES]
    for index in range(args.count):
        encoding = ENCODINGS[index % len(ENCODINGS)]
        # Sizes step through the list at a different pace than encodings,
        # so every encoding meets many sizes.
        longer = SIZES[(index // len(ENCODINGS) + index) % len(SIZES)]
        # The upscaled ones double at the end; keep them phone-sized. And
        # uncompressed formats stay under the default 20 MiB upload limit.
        if encoding == "upscaled.jpg":
            longer = min(longer, 2000)
        if encoding in ("plain.bmp", "lzw.tiff"):
            longer = min(longer, 2048)
        image = variant(sources[index % len(sources)], index, longer)
        save(image, os.path.join(args.out, f"{index:03d}-{encoding}"), encoding)


if __name__ == "__main__":
    main()
