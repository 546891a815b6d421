"""Draw the project's own mascot, a cartoon cat face, for the picture -> points experiment.

The picture is drawn, not downloaded, so the repository owns every pixel of it. Run

    python minidiff/assets/make_picture.py                 # rewrites minidiff/assets/mascot.png
    python minidiff/assets/make_picture.py out.png 256     # another path and size

Dark strokes and filled shapes on a white background: `minidiff.data.points_from_picture`
turns its dark pixels into a 2-D point cloud.
"""
import sys
from pathlib import Path

from PIL import Image, ImageDraw

DEFAULT_SIZE = 160       # pixels per side of the committed picture
INK = 0                  # black, in the 1-bit picture
PAPER = 1                # white


def draw_mascot(size=DEFAULT_SIZE):
    """The cat face as a 1-bit Pillow image of `size` x `size` pixels.

    Every coordinate below lives on a 100 x 100 design grid; `p` maps it to pixels, so the same
    drawing comes out at any size.
    """
    if not isinstance(size, int) or size < 32:
        raise ValueError(f"draw_mascot: size must be an int >= 32, got {size!r}")
    img = Image.new("1", (size, size), PAPER)
    draw = ImageDraw.Draw(img)
    s = size / 100.0

    def p(*xy):                      # design-grid coordinates -> pixel coordinates
        return [round(v * s) for v in xy]

    stroke = max(2, round(3.5 * s))  # line width of the outlines

    # Ears: two filled triangles behind the head.
    draw.polygon(p(14, 44, 20, 4, 44, 24), fill=INK)
    draw.polygon(p(86, 44, 80, 4, 56, 24), fill=INK)
    # Head: a white disc with a thick outline, drawn over the ears' lower corners.
    draw.ellipse(p(10, 16, 90, 94), fill=PAPER, outline=INK, width=stroke)
    # Eyes: filled ovals, each with a white highlight.
    draw.ellipse(p(28, 40, 42, 58), fill=INK)
    draw.ellipse(p(58, 40, 72, 58), fill=INK)
    draw.ellipse(p(33, 43, 38, 48), fill=PAPER)
    draw.ellipse(p(63, 43, 68, 48), fill=PAPER)
    # Nose: a small filled triangle pointing down.
    draw.polygon(p(45, 64, 55, 64, 50, 70), fill=INK)
    # Mouth: two arcs under the nose, like a "w".
    draw.arc(p(39, 62, 50, 74), start=0, end=180, fill=INK, width=stroke)
    draw.arc(p(50, 62, 61, 74), start=0, end=180, fill=INK, width=stroke)
    # Whiskers: three lines on each cheek.
    for dy in (-4, 2, 8):
        draw.line(p(4, 64 + dy, 32, 66 + dy // 2), fill=INK, width=max(1, stroke // 2))
        draw.line(p(96, 64 + dy, 68, 66 + dy // 2), fill=INK, width=max(1, stroke // 2))
    return img


def main(argv):
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("mascot.png")
    size = int(argv[2]) if len(argv) > 2 else DEFAULT_SIZE
    draw_mascot(size).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size} bytes, {size}x{size})")


if __name__ == "__main__":
    main(sys.argv)
