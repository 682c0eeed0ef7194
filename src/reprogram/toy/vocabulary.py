"""The world's vocabulary as data: every factor's values, their colours and placement, the
(shape, colour) pairs held out of pretraining, and the phrases that name each value.

========== =====================================================================
shape      circle, square, triangle, diamond, star, cross, heart, ring, crescent, arrow
color      red, orange, yellow, green, cyan, blue, purple, pink, brown, white
texture    solid, striped, dotted, checkered, wavy (a darker or lighter shade of the colour)
size       small, medium, large
position   center, top left, top right, bottom left, bottom right
background black, gray, white
========== =====================================================================

:data:`PHRASES` is shared by the pretraining captions (:mod:`reprogram.toy.captions`) and the
class descriptions (:mod:`reprogram.toy.describe`), so the text encoder understands both.
"""

from __future__ import annotations

SHAPES = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "star",
    "cross",
    "heart",
    "ring",
    "crescent",
    "arrow",
)
COLORS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "white")
TEXTURES = ("solid", "striped", "dotted", "checkered", "wavy")
SIZES = ("small", "medium", "large")
POSITIONS = ("center", "top left", "top right", "bottom left", "bottom right")
BACKGROUNDS = ("black", "gray", "white")

FACTORS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": COLORS,
    "texture": TEXTURES,
    "size": SIZES,
    "position": POSITIONS,
    "background": BACKGROUNDS,
}
FACTOR_NAMES = tuple(FACTORS)

COLOR_RGB = {
    "red": (220, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 35),
    "green": (40, 165, 60),
    "cyan": (40, 210, 225),
    "blue": (35, 70, 220),
    "purple": (135, 50, 190),
    "pink": (245, 125, 195),
    "brown": (125, 75, 35),
    "white": (245, 245, 245),
}
BACKGROUND_RGB = {"black": (15, 15, 15), "gray": (128, 128, 128), "white": (240, 240, 240)}
SIZE_RADIUS = {"small": 0.22, "medium": 0.35, "large": 0.5}  # in units of half the image width
POSITION_OFFSET = {
    "center": (0.0, 0.0),
    "top left": (-0.42, -0.42),
    "top right": (0.42, -0.42),
    "bottom left": (-0.42, 0.42),
    "bottom right": (0.42, 0.42),
}

# Held out of pretraining entirely: these (shape, colour) pairs never appear in a pretraining image
# (so no caption ever names them together). Shape i is held out with colours i, i+3, i+6 (mod 10):
# every shape and every colour is held out three times and seen with seven partners.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (SHAPES[i], COLORS[(i + k) % len(COLORS)]) for i in range(len(SHAPES)) for k in (0, 3, 6)
)


# ---------------------------------------------------------------------------------------------
# Vocabulary: names and paraphrases of every factor value, used by captions and descriptions.
# ---------------------------------------------------------------------------------------------
# For each value: "names" (nouns for shapes, adjectives for the rest, usable inside a noun phrase)
# and "details" (phrases usable after "with" / "that has"), "clauses" (complete predicates).
PHRASES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "shape": {
        "circle": {
            "names": ("circle", "disc", "round disc"),
            "details": ("a round outline", "a smooth curved edge", "no corners at all"),
            "clauses": ("is perfectly round", "has a smooth round edge without corners"),
        },
        "square": {
            "names": ("square", "block"),
            "details": ("four equal sides", "four right-angled corners", "straight edges"),
            "clauses": ("has four equal straight sides", "is a box with four square corners"),
        },
        "triangle": {
            "names": ("triangle", "triangular shape"),
            "details": ("three straight sides", "three sharp corners", "a point at the top"),
            "clauses": ("has three sides and three corners", "points upwards like a pyramid"),
        },
        "diamond": {
            "names": ("diamond", "rhombus"),
            "details": (
                "four tilted sides",
                "a corner at the top and bottom",
                "a tilted square outline",
            ),
            "clauses": ("looks like a square standing on its corner", "has four slanted sides"),
        },
        "star": {
            "names": ("star", "five-pointed star"),
            "details": ("five sharp points", "pointed arms", "spiky tips"),
            "clauses": ("has five pointed arms", "is spiky with five tips"),
        },
        "cross": {
            "names": ("cross", "plus sign"),
            "details": (
                "four straight arms",
                "a vertical and a horizontal bar",
                "arms of equal length",
            ),
            "clauses": ("is made of two crossing bars", "looks like a plus sign"),
        },
        "heart": {
            "names": ("heart", "heart shape"),
            "details": (
                "two rounded lobes on top",
                "a point at the bottom",
                "a dip in the middle of the top",
            ),
            "clauses": ("has two round bumps and a pointed bottom", "looks like a love heart"),
        },
        "ring": {
            "names": ("ring", "hoop", "donut shape"),
            "details": ("a hole in the middle", "a round hollow centre", "a thick round band"),
            "clauses": ("is round and hollow in the middle", "looks like a donut with a hole"),
        },
        "crescent": {
            "names": ("crescent", "crescent moon"),
            "details": (
                "a curved outline",
                "two thin pointed horns",
                "one round side and one hollow side",
            ),
            "clauses": ("is curved like a new moon", "looks like a thin moon with two tips"),
        },
        "arrow": {
            "names": ("arrow", "upward arrow"),
            "details": (
                "a pointed head and a straight shaft",
                "a triangular tip on a stem",
                "a long stem",
            ),
            "clauses": ("points upwards with a head on a stem", "looks like a sign pointing up"),
        },
    },
    "color": {
        "red": {
            "names": ("red", "bright red", "scarlet"),
            "details": ("the colour of a tomato",),
            "clauses": ("is red like a fire truck", "is coloured a strong red"),
        },
        "orange": {
            "names": ("orange", "bright orange"),
            "details": ("the colour of a carrot",),
            "clauses": ("is orange like a carrot", "is coloured a warm orange"),
        },
        "yellow": {
            "names": ("yellow", "bright yellow", "lemon yellow"),
            "details": ("the colour of a lemon",),
            "clauses": ("is yellow like a lemon", "is coloured a sunny yellow"),
        },
        "green": {
            "names": ("green", "grass green"),
            "details": ("the colour of grass",),
            "clauses": ("is green like grass", "is coloured a leafy green"),
        },
        "cyan": {
            "names": ("cyan", "turquoise", "light blue"),
            "details": ("the colour of shallow water",),
            "clauses": ("is cyan like tropical water", "is coloured a bright turquoise"),
        },
        "blue": {
            "names": ("blue", "deep blue", "royal blue"),
            "details": ("the colour of deep sea",),
            "clauses": ("is a deep blue like the ocean", "is coloured a strong blue"),
        },
        "purple": {
            "names": ("purple", "violet"),
            "details": ("the colour of grapes",),
            "clauses": ("is purple like a grape", "is coloured a rich violet"),
        },
        "pink": {
            "names": ("pink", "light pink"),
            "details": ("the colour of candy floss",),
            "clauses": ("is pink like a flamingo", "is coloured a soft pink"),
        },
        "brown": {
            "names": ("brown", "dark brown"),
            "details": ("the colour of chocolate",),
            "clauses": ("is brown like wood", "is coloured a chocolate brown"),
        },
        "white": {
            "names": ("white", "snow white"),
            "details": ("the colour of snow",),
            "clauses": ("is white like snow", "is coloured a clean white"),
        },
    },
    "texture": {
        "solid": {
            "names": ("solid", "plain", "flat"),
            "details": ("a plain surface", "one flat colour"),
            "clauses": (
                "has a plain surface without any pattern",
                "is filled with one flat colour",
            ),
        },
        "striped": {
            "names": ("striped",),
            "details": ("stripes", "parallel lines", "bands of two shades"),
            "clauses": ("is covered in straight stripes", "has a pattern of parallel lines"),
        },
        "dotted": {
            "names": ("dotted", "spotted", "polka dot"),
            "details": ("dots", "a grid of spots"),
            "clauses": ("is covered in small round dots", "has a polka dot pattern"),
        },
        "checkered": {
            "names": ("checkered", "chequered", "checked"),
            "details": ("a checkerboard pattern", "little squares of two shades"),
            "clauses": ("is patterned like a chess board", "has a checked pattern of squares"),
        },
        "wavy": {
            "names": ("wavy", "rippled"),
            "details": ("wavy lines", "curvy ripples"),
            "clauses": ("is covered in wavy lines", "has a rippled pattern of curves"),
        },
    },
    "size": {
        "small": {
            "names": ("small", "tiny", "little"),
            "details": ("a small size",),
            "clauses": ("is small and fills little of the picture", "takes up only a small area"),
        },
        "medium": {
            "names": ("medium", "medium-sized", "mid-sized"),
            "details": ("a medium size",),
            "clauses": ("is of medium size", "fills part of the picture"),
        },
        "large": {
            "names": ("large", "big", "huge"),
            "details": ("a large size",),
            "clauses": ("is large and fills most of the picture", "takes up a big area"),
        },
    },
    "position": {
        "center": {
            "names": ("in the center", "in the middle", "at the centre"),
            "details": (),
            "clauses": ("sits in the middle of the picture",),
        },
        "top left": {
            "names": ("in the top left", "at the upper left", "in the top left corner"),
            "details": (),
            "clauses": ("sits in the upper left corner",),
        },
        "top right": {
            "names": ("in the top right", "at the upper right", "in the top right corner"),
            "details": (),
            "clauses": ("sits in the upper right corner",),
        },
        "bottom left": {
            "names": ("in the bottom left", "at the lower left", "in the bottom left corner"),
            "details": (),
            "clauses": ("sits in the lower left corner",),
        },
        "bottom right": {
            "names": ("in the bottom right", "at the lower right", "in the bottom right corner"),
            "details": (),
            "clauses": ("sits in the lower right corner",),
        },
    },
    "background": {
        "black": {
            "names": ("black", "dark", "pitch black"),
            "details": ("a dark background",),
            "clauses": ("stands on a black background",),
        },
        "gray": {
            "names": ("gray", "grey", "mid gray"),
            "details": ("a gray background",),
            "clauses": ("stands on a gray background",),
        },
        "white": {
            "names": ("white", "light", "bright white"),
            "details": ("a light background",),
            "clauses": ("stands on a white background",),
        },
    },
}
