"""File names and image types: safe, sharded, never outside images/."""

from __future__ import annotations

import posixpath

import pytest

from downloader.core.naming import image_path, safe_part, sniff_image_type


@pytest.mark.parametrize("pn", ["../../x", "a/b\\c", "US1\x00B2", "é" * 5, "A" * 5000, "..", "", "CON", " "])
def test_hostile_names_stay_inside_images(pn):
    path = image_path(pn, "0001", "png")
    parts = path.split("/")
    assert parts[0] == "images" and len(parts) == 4
    assert posixpath.normpath(path) == path and ".." not in parts
    assert all(ch.isalnum() or ch in "_-." for ch in parts[-1])
    assert len(parts[-1]) <= 130


def test_plain_names_are_readable_and_stable():
    path = image_path("CN104169186A", "0001", "png")
    assert path.endswith("/CN104169186A_0001.png")
    assert path == image_path("CN104169186A", "0001", "png")


def test_distinct_unsafe_names_do_not_collide():
    assert safe_part("a/b") != safe_part("a_b") and safe_part("a/b") != safe_part("a\\b")


def test_shards_spread_files():
    folders = {image_path(f"CN{i:09d}A", "0001", "png").rsplit("/", 1)[0] for i in range(20000)}
    assert len(folders) > 3500  # 4,096 leaf folders: ~2,500 files each at ten million patents


@pytest.mark.parametrize(("head", "ext"), [
    (b"\x89PNG\r\n\x1a\n\0\0\0\0", "png"), (b"\xff\xd8\xff\xe0\0\0JFIF\0\0", "jpg"),
    (b"GIF89a\0\0\0\0\0\0", "gif"), (b"II*\x00\0\0\0\0\0\0\0\0", "tif"), (b"MM\x00*\0\0\0\0\0\0\0\0", "tif"),
    (b"RIFF\0\0\0\0WEBP", "webp"), (b"BM\0\0\0\0\0\0\0\0\0\0", "bmp"),
    (b"<html><body>", None), (b"<?xml version", None), (b"", None), (b"XXXX\0\0\0\0WEBP", None)])
def test_sniff_image_type(head, ext):
    assert sniff_image_type(head) == ext
