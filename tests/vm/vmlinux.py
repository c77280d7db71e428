#!/usr/bin/env python3
"""tests/vm/vmlinux.py BZIMAGE OUT: the uncompressed ELF kernel inside a bzImage.

QEMU's microvm machine boots an ELF kernel through its PVH entry point; Debian ships a
compressed bzImage. The payload is found by its compression magic (xz or gzip; Debian's
amd64 kernels use xz) and decompressed up to the end of its stream; the result must start
with the ELF magic, or the next candidate offset is tried.
"""
import gzip
import lzma
import sys
import zlib

MAGICS = [
    (b"\xfd7zXZ\x00", lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ)),
    (b"\x1f\x8b\x08", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)),
]


def extract(image: bytes) -> bytes:
    for magic, make in MAGICS:
        start = image.find(magic)
        while start >= 0:
            try:
                out = make().decompress(image[start:])
                if out.startswith(b"\x7fELF"):
                    return out
            except (lzma.LZMAError, zlib.error, gzip.BadGzipFile, EOFError):
                pass
            start = image.find(magic, start + 1)
    raise SystemExit("vmlinux.py: no xz or gzip payload with an ELF kernel found")


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    with open(sys.argv[1], "rb") as f:
        kernel = extract(f.read())
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "wb") as f:
        f.write(kernel)
    import os

    os.replace(tmp, sys.argv[2])


if __name__ == "__main__":
    main()
