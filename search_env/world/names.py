"""Fictional names for the embedded world, unique after answer normalisation.

Names are built from syllables so no pretrained model has seen them: a policy can only answer by
searching. Every name is registered by its `normalize_answer` key, so two entities never share an
answer string ("The Ashen Lattice" and "Ashen Lattice" count as the same name).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from search_env.answers import normalize_answer

ONSETS = (
    "b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "qu", "r",
    "s", "st", "t", "th", "tr", "v", "vr", "z", "",
)
VOWELS = ("a", "e", "i", "o", "u", "ae", "ai", "ei", "ou", "y")
CODAS = ("", "", "", "n", "r", "s", "l", "th", "m", "rn", "ck", "nd", "x")
# Endings that make a word read as a country, region, city or surname.
COUNTRY_ENDINGS = ("ia", "and", "ovia", "ara", "ea", "istan")
REGION_ENDINGS = ("a", "en", "ar", "ia", "mark", "shire")
CITY_ENDINGS = ("", "", "holm", "burg", "ford", "grad", "mouth", "ton", "vik", "ar")

ADJECTIVES = (
    "Ashen", "Silent", "Hollow", "Crimson", "Distant", "Broken", "Gilded", "Winter", "Iron", "Pale",
    "Burning", "Quiet", "Lost", "Northern", "Salt", "Glass", "Velvet", "Bitter", "Hidden", "Last",
    "Restless", "Scarlet", "Amber", "Copper", "Wandering", "Sleeping", "Golden", "Shattered",
    "Drowned", "Endless", "Forgotten", "Secret", "Violet", "Cold", "Wild", "Lonely", "Midnight",
    "Painted", "Hungry", "Sunken", "Fading", "Radiant", "Tangled", "Emerald", "Frozen", "Silver",
)
NOUNS = (
    "Lattice", "Harbour", "Orchard", "Lantern", "Meridian", "Garden", "Archive", "Compass", "Tide",
    "Citadel", "Mirror", "Orchestra", "Meadow", "Tower", "Voyage", "Furnace", "Chapel", "Horizon",
    "Labyrinth", "Season", "Letter", "Kingdom", "Carnival", "Lighthouse", "River", "Machine",
    "Parade", "Frontier", "Cathedral", "Bridge", "Signal", "Empire", "Window", "Theorem", "Ballad",
    "Winterland", "Circus", "Shore", "Silence", "Hymn", "Fortress", "Daughter", "Stranger", "Crown",
    "Echo", "Atlas", "Feather", "Engine", "Island", "Wolf",
)


class NameRegistry:
    """Claims names by their normalised form; a claim fails when another name already has it."""

    def __init__(self) -> None:
        self._keys: dict[str, str] = {}

    def claim(self, name: str) -> bool:
        key = normalize_answer(name)
        if not key or key in self._keys:
            return False
        self._keys[key] = name
        return True

    def __contains__(self, name: str) -> bool:
        return normalize_answer(name) in self._keys

    def __len__(self) -> int:
        return len(self._keys)


class NameForge:
    """Draws fictional words and unique names from one seeded random stream."""

    def __init__(self, rng: random.Random, registry: NameRegistry | None = None) -> None:
        self.rng = rng
        self.registry = registry if registry is not None else NameRegistry()

    def word(self, min_syllables: int = 2, max_syllables: int = 3, ending: str = "") -> str:
        """A capitalised fictional word of at least 4 letters (shorter ones read like English)."""
        while True:
            text = self._word(min_syllables, max_syllables, ending)
            if len(text) >= 4:
                return text

    def _word(self, min_syllables: int, max_syllables: int, ending: str) -> str:
        rng = self.rng
        parts = []
        for index in range(rng.randint(min_syllables, max_syllables)):
            onset = rng.choice(ONSETS)
            if index and not onset:  # no vowel clusters across syllables
                onset = rng.choice(ONSETS[:-1])
            parts.append(onset + rng.choice(VOWELS))
        coda = "" if ending else rng.choice(CODAS)
        text = "".join(parts) + coda
        if ending and ending[0] in "aeiouy":
            text = text.rstrip("aeiouy")
            text = (text + "u" if text.endswith("q") else text) + ending
        elif ending:
            text += ending
        return text.capitalize()

    def unique(self, factory: Callable[[], str], attempts: int = 1000) -> str:
        """A name from `factory` that no entity holds yet (claimed on return)."""
        name = self.maybe_unique(factory, attempts)
        if name is None:
            raise RuntimeError(f"no unique name after {attempts} attempts; the name space is exhausted")
        return name

    def maybe_unique(self, factory: Callable[[], str], attempts: int) -> str | None:
        """Like `unique`, but None when `factory` keeps giving taken names (a narrow factory)."""
        for _ in range(attempts):
            name = factory()
            if self.registry.claim(name):
                return name
        return None

    def word_pool(self, size: int, min_syllables: int = 2, max_syllables: int = 3) -> list[str]:
        """`size` distinct, claimed words (given names or surnames)."""
        return [self.unique(lambda: self.word(min_syllables, max_syllables)) for _ in range(size)]

    def title(self) -> str:
        """A book, film or album title: English words mixed with fictional ones."""
        rng = self.rng
        pattern = rng.randrange(7)
        adjective, noun, fictional = rng.choice(ADJECTIVES), rng.choice(NOUNS), self.word(2, 3)
        if pattern == 0:
            return f"The {adjective} {noun}"
        if pattern == 1:
            return f"{adjective} {plural(noun)}"
        if pattern == 2:
            return f"The {noun} of {fictional}"
        if pattern == 3:
            return f"{fictional}"
        if pattern == 4:
            return f"{indefinite_article(noun).capitalize()} {noun} for {fictional}"
        if pattern == 5:
            return f"{noun} and {rng.choice(NOUNS)}"
        return f"Songs from {fictional}" if rng.random() < 0.5 else f"The {adjective} {noun} of {fictional}"


def near_name(rng: random.Random, word: str) -> str:
    """`word` with one vowel changed: a look-alike for distractor entities."""
    positions = [i for i, ch in enumerate(word) if ch.lower() in "aeiou"]
    if not positions:
        return word + "e"
    index = rng.choice(positions)
    current = word[index].lower()
    replacement = rng.choice([v for v in "aeiou" if v != current])
    if index == 0:
        replacement = replacement.upper()
    return word[:index] + replacement + word[index + 1 :]


def plural(noun: str) -> str:
    if noun.endswith("f"):
        return noun[:-1] + "ves"
    if noun.endswith(("s", "x", "ch", "sh", "o")):
        return noun + "es"
    return noun + "s"


def indefinite_article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def demonym(country: str) -> str:
    """The adjective of a fictional country name: Morvia -> Morvian, Kelstan -> Kelstani."""
    if country.endswith("stan"):
        return country + "i"
    if country.endswith("a"):
        return country + "n"
    if country[-1] in "eiouy":
        return country + "an"
    return country + "ian"
