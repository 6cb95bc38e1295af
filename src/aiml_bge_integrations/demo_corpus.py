"""The demo's corpus: three dozen short passages on varied topics and queries with known answers.

Written for this package (no third-party text). ``PASSAGES`` holds ``(id, text)`` pairs and
``QUERIES`` holds ``(query, expected passage id)`` pairs: for each query the expected passage is
the one a reader would pick, and it shares enough words with the query that the local server's
lexical stand-in embedder ranks it first too, so tests can assert on it. ``PASSAGE_TEXT`` maps
an id to its text.
"""

from __future__ import annotations

__all__ = ["PASSAGES", "PASSAGE_TEXT", "QUERIES"]

PASSAGES: list[tuple[str, str]] = [
    (
        "astro-moon",
        "The Moon takes about 27 days to orbit the Earth, and the same side of the Moon "
        "always faces us because its rotation is locked to that orbit.",
    ),
    (
        "astro-mars",
        "The planet Mars looks red because iron minerals in its dust and rocks have oxidised, "
        "much like rust on an old bicycle.",
    ),
    (
        "astro-blackhole",
        "A black hole forms when a massive star collapses and its gravity becomes so strong "
        "that not even light can escape the event horizon.",
    ),
    (
        "bio-photosynthesis",
        "Plants use photosynthesis to turn sunlight, water and carbon dioxide into sugar, "
        "releasing oxygen as a by-product through their leaves.",
    ),
    (
        "bio-octopus",
        "An octopus has three hearts and blue blood; two hearts pump blood through the gills "
        "and the third supplies the rest of the body.",
    ),
    (
        "bio-bees",
        "Honey bees tell their hive where flowers are by dancing: the angle of the waggle dance "
        "points the way and its length gives the distance.",
    ),
    (
        "bio-sleep",
        "Adults need seven to nine hours of sleep a night; too little sleep harms memory, "
        "mood and the immune system.",
    ),
    (
        "cook-bread",
        "Bread rises because yeast eats sugar in the dough and releases carbon dioxide gas, "
        "which is trapped by the stretchy gluten network.",
    ),
    (
        "cook-pasta",
        "Cook pasta in plenty of salted boiling water and taste it a minute before the packet "
        "time; it should be tender but still firm to the bite.",
    ),
    (
        "cook-coffee",
        "Espresso is made by forcing hot water at high pressure through finely ground coffee "
        "beans, which gives a small, strong cup topped with crema.",
    ),
    (
        "cook-knife",
        "A sharp kitchen knife is safer than a dull one, because it cuts with less force and is "
        "less likely to slip off an onion or tomato.",
    ),
    (
        "hist-rome",
        "The Roman Empire built thousands of kilometres of paved roads so that legions, "
        "traders and messengers could cross its provinces quickly.",
    ),
    (
        "hist-printing",
        "Johannes Gutenberg's printing press, built around 1450 with movable metal type, made "
        "books cheaper and spread literacy across Europe.",
    ),
    (
        "hist-pyramids",
        "The great pyramids of Giza were built as tombs for Egyptian pharaohs more than "
        "four thousand years ago, using millions of stone blocks.",
    ),
    (
        "hist-moonlanding",
        "In July 1969 the Apollo 11 mission landed astronauts Neil Armstrong and Buzz Aldrin "
        "on the Moon while Michael Collins stayed in lunar orbit.",
    ),
    (
        "tech-password",
        "A strong password is long and unique to each account; a password manager can "
        "generate and remember such passwords for you.",
    ),
    (
        "tech-battery",
        "Lithium-ion batteries last longer if you avoid keeping them at full charge in a hot "
        "place and avoid draining the battery completely.",
    ),
    (
        "tech-wifi",
        "Wi-Fi signals weaken through thick walls and metal, so placing the router in a "
        "central, open spot often improves the connection at home.",
    ),
    (
        "tech-python",
        "Python is a programming language known for readable code; its list comprehensions "
        "build a new list from an existing one in a single line.",
    ),
    (
        "tech-embeddings",
        "Text embeddings map words to vectors of numbers so that texts with similar meaning "
        "end up close together, which makes semantic retrieval possible.",
    ),
    (
        "geo-everest",
        "Mount Everest, on the border of Nepal and China, is the highest mountain above sea "
        "level at about 8,849 metres.",
    ),
    (
        "geo-amazon",
        "The Amazon river carries more water than any other river on Earth and drains a "
        "rainforest that covers much of northern South America.",
    ),
    (
        "geo-sahara",
        "The Sahara is the largest hot desert in the world; daytime heat can pass 45 degrees "
        "while nights in the desert can be close to freezing.",
    ),
    (
        "geo-iceland",
        "Iceland sits on the boundary between two tectonic plates, which is why the island has "
        "so many volcanoes, geysers and hot springs.",
    ),
    (
        "music-dj",
        "Laura is a DJ who mixes house and techno records, matching the tempo of one track to "
        "the next so the dance floor never stops.",
    ),
    (
        "music-piano",
        "A piano has 88 keys; each key moves a felt hammer that strikes steel strings tuned "
        "to a note.",
    ),
    (
        "music-guitar",
        "To tune a guitar by ear, play the fifth fret of the low string and match it to the "
        "next open string, then repeat across the neck.",
    ),
    (
        "sport-marathon",
        "A marathon is 42.195 kilometres long; runners train for months, building weekly "
        "mileage slowly to avoid injury.",
    ),
    (
        "sport-chess",
        "In chess, castling moves the king two squares towards a rook and places that rook on "
        "the square the king crossed, in a single move.",
    ),
    (
        "sport-football",
        "A football match lasts ninety minutes split into two halves, and a team scores a goal "
        "when the whole ball crosses the goal line.",
    ),
    (
        "health-water",
        "Drinking water through the day helps the body control its temperature; thirst, dark "
        "urine and headaches are early signs of dehydration.",
    ),
    (
        "health-handwash",
        "Washing hands with soap for twenty seconds removes germs far better than rinsing "
        "with water alone.",
    ),
    (
        "money-interest",
        "Compound interest means you earn interest on earlier interest as well as on your "
        "savings, so money grows faster the longer it is left alone.",
    ),
    (
        "money-budget",
        "A simple monthly budget lists income, then fixed bills, then savings, and only then "
        "spending money for everything else.",
    ),
    (
        "garden-tomato",
        "Tomato plants need at least six hours of direct sun, deep watering at the roots and "
        "a stake or cage to hold up the fruit.",
    ),
    (
        "pets-cat",
        "Cats purr when they are content, but also when stressed or hurt; the purr is made "
        "by muscles in the cat's voice box.",
    ),
]
"""The corpus: ``(id, text)`` pairs, ids unique, texts short (well under 512 BGE tokens)."""

QUERIES: list[tuple[str, str]] = [
    ("Why does the planet Mars look red?", "astro-mars"),
    ("How many hearts does an octopus have?", "bio-octopus"),
    ("Why does bread dough rise with yeast?", "cook-bread"),
    ("Who walked on the Moon in 1969?", "hist-moonlanding"),
    ("How can I make a lithium-ion battery last longer?", "tech-battery"),
    ("What is the highest mountain above sea level?", "geo-everest"),
    ("Which DJ mixes house and techno?", "music-dj"),
    ("How long is a marathon?", "sport-marathon"),
    ("Why do cats purr?", "pets-cat"),
    ("How does compound interest grow savings?", "money-interest"),
]
"""Queries with the id of the passage that answers each."""

PASSAGE_TEXT: dict[str, str] = dict(PASSAGES)
"""Passage text by id."""
