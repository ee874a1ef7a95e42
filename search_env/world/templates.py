"""Sentence and question templates of the embedded world.

Kept apart from the generator so the prose can grow without touching the graph logic. Passage
templates are `str.format` strings over a context the generator fills; question templates take the
subject as `{s}` and say whether `{s}` may be a noun phrase ("the author of X") rather than a name.
"""

from __future__ import annotations

# -- vocabulary ---------------------------------------------------------------------------------

# occupation -> organisation subtypes that may employ it
OCCUPATIONS: dict[str, tuple[str, ...]] = {
    "novelist": ("publisher", "university"),
    "poet": ("publisher", "university"),
    "journalist": ("publisher", "company"),
    "film director": ("studio",),
    "screenwriter": ("studio",),
    "musician": ("band", "label"),
    "singer": ("band", "label"),
    "composer": ("label", "university"),
    "engineer": ("company",),
    "chemist": ("company", "university"),
    "architect": ("company",),
    "physician": ("university",),
    "economist": ("university", "company"),
    "mathematician": ("university",),
    "historian": ("university",),
    "banker": ("company",),
}
OCCUPATION_WEIGHTS: dict[str, float] = {
    "novelist": 12, "poet": 5, "journalist": 6, "film director": 8, "screenwriter": 3, "musician": 9,
    "singer": 6, "composer": 4, "engineer": 8, "chemist": 6, "architect": 5, "physician": 5,
    "economist": 5, "mathematician": 4, "historian": 5, "banker": 4,
}
# work subtype -> occupations that create it
CREATORS: dict[str, tuple[str, ...]] = {
    "novel": ("novelist",),
    "film": ("film director",),
    "album": ("musician", "singer", "composer"),
}
WORK_WEIGHTS: dict[str, float] = {"novel": 0.45, "film": 0.25, "album": 0.30}
PUBLISHER_SUBTYPE: dict[str, str] = {"novel": "publisher", "film": "studio", "album": "label"}
GENRES: dict[str, tuple[str, ...]] = {
    "novel": ("mystery", "historical", "science fiction", "adventure", "romance", "satirical", "gothic",
              "crime"),
    "film": ("drama", "comedy", "thriller", "western", "documentary", "musical", "war"),
    "album": ("folk", "jazz", "rock", "electronic", "blues", "choral", "pop"),
}

ORG_WEIGHTS: dict[str, float] = {
    "company": 0.33, "university": 0.08, "publisher": 0.16, "label": 0.13, "studio": 0.10, "band": 0.20,
}
ORG_KIND_WORD: dict[str, str] = {
    "company": "company", "university": "university", "publisher": "publishing house",
    "label": "record label", "studio": "film studio", "band": "band",
}
ORG_SUFFIXES: dict[str, tuple[str, ...]] = {
    "company": ("{w} Industries", "{w} Holdings", "{w} Group", "{w} Works", "{w} Company", "{w} Systems",
                "{w} Manufacturing", "{w} Trading Company"),
    "university": ("{w} University", "University of {w}", "{w} Institute of Technology", "{w} College"),
    "publisher": ("{w} Press", "{w} House", "{w} and Sons", "{w} Books"),
    "label": ("{w} Records", "{w} Music", "{w} Sound"),
    "studio": ("{w} Pictures", "{w} Studios", "{w} Films"),
    "band": ("The {w}s", "{w}", "The {w} Ensemble", "{w} Quartet"),
}
INDUSTRIES = (
    "shipbuilding", "textile", "mining", "railway", "brewing", "banking", "telecommunications",
    "chemical", "glassmaking", "aviation", "insurance", "printing", "steel", "shipping", "pharmaceutical",
)
LANDMARK_KINDS = ("Bridge", "Cathedral", "Tower", "Gate", "Palace", "Observatory", "Abbey", "Lighthouse")
AWARD_KINDS = ("Prize", "Medal", "Award")
AWARD_FIELDS = ("literary", "scientific", "musical", "architectural", "civic", "film")

ORDINALS = ("first", "second", "third", "fourth", "fifth")
INTERESTS = ("music", "mathematics", "drawing", "languages", "machines", "old maps", "poetry", "astronomy")
QUALITIES = ("precision", "restraint", "humour", "ambition", "clarity", "warmth", "strangeness", "rigour")
HOUSEHOLDS = ("modest", "large", "musical", "devout", "prosperous", "crowded")
ECONOMIES = ("fishing", "trade", "tourism", "light industry", "farming", "river transport")
CLIMATES = ("mild", "damp", "dry", "cold in winter", "windy")
LANDSCAPES = ("hills", "vineyards", "marshes", "forests", "lakes", "high plateaus")
ORIGINS = ("river crossing", "market town", "fortress", "monastery", "fishing village", "trading post")
RECEPTIONS = ("warm", "mixed", "enthusiastic", "hostile", "respectful")
EMBLEMS = ("heron", "lantern", "wheel", "star", "crowned lion", "ship", "tower")

# -- passage sentences --------------------------------------------------------------------------

# No nationality here: it would give away the birthplace's country without the city's page.
PERSON_IDENTITY = (
    "{name} (born {year}) {be} {art_adj} {adj} {occupation}.",
    "{name}, born in {year}, {be} {art_occ} {occupation}.",
    "{name} {be} {art_adj} {adj} {occupation}, born in {year}.",
    "Born in {year}, {name} {be} {art_adj} {adj} {occupation}.",
)
PERSON_ADJECTIVES = ("celebrated", "prolific", "little-known", "influential", "self-taught", "respected",
                     "controversial", "versatile")
PERSON_BIRTHPLACE = (
    "{name} was born in {city}, a city in {region}.",
    "{surname} was born in {city} and spent {poss} childhood there.",
    "{Pron} was born in the city of {city}.",
    "Born in {city}, {surname} left home at the age of {age}.",
    "{surname}'s birthplace was {city}, in the region of {region}.",
)
PERSON_EMPLOYER: dict[str, tuple[str, ...]] = {
    "company": ("{surname} worked for {org} from {y1} to {y2}.", "In {y1}, {surname} joined {org}.",
                "{surname} spent most of {poss} career at {org}."),
    "publisher": ("{surname} worked as an editor at {org}.", "In {y1}, {surname} joined the publishing house {org}."),
    "university": ("{surname} taught at {org} for {n} years.", "{name} held a professorship at {org}.",
                   "In {y1}, {surname} took up a post at {org}."),
    "band": ("{surname} was a member of the band {org}.", "{surname} played with {org} for {n} years.",
             "In {y1}, {surname} joined the band {org}."),
    "label": ("{surname} was signed to {org}.", "{surname} recorded for the label {org} from {y1}."),
    "studio": ("{surname} worked under contract at {org}.", "In {y1}, {surname} joined the film studio {org}."),
}
PERSON_SPOUSE = (
    "{surname} married {spouse} in {y1}.",
    "{name} was married to {spouse}.",
    "{Poss} spouse was {spouse}.",
)
PERSON_OPENERS: dict[str, tuple[str, ...]] = {
    "birthplace": ("{name} grew up in a {household} household.", "Little is known of the early years of {name}."),
    "employer": ("{name}'s career developed slowly at first.", "{name} worked steadily for most of {poss} life."),
    "spouse": ("{name} led a largely private life.", "{name} rarely spoke in public about {poss} family."),
}
GENERIC_OPENERS = ("More is known about {name}.", "{name} is the subject of several studies.")
PERSON_FILLERS = (
    "{surname} was the {ordinal} of {siblings} children.",
    "As a child, {surname} showed an early interest in {interest}.",
    "{surname}'s work was noted for its {quality}.",
    "In later life {surname} gave frequent public lectures.",
    "{Pron} kept detailed diaries that were published much later.",
    "{surname} was often mentioned alongside {other}.",
    "{surname} corresponded for many years with {other}.",
)

CITY_IDENTITY = (
    "{name} is a city in {region}, a region of {country}.",
    "{name} is a {size} city in the {region} region of {country}.",
    "The city of {name} lies in {region}, {country}.",
)
CITY_FOUNDED = (
    "{name} was founded in {year}.",
    "The city was founded in {year} as a {origin}.",
    "Founded in {year}, {name} grew around a {origin}.",
    "{name} traces its founding to {year}.",
)
CITY_RIVER = (
    "{name} lies on the {river}.",
    "The {river} flows through {name}.",
    "{name} was built on both banks of the {river}.",
)
CITY_LANDMARK = (
    "{name} is known for the {landmark}, completed in {y1}.",
    "The best-known landmark of {name} is the {landmark}.",
    "Visitors to {name} come to see the {landmark}.",
)
CITY_FILLERS = (
    "{name} has a population of about {population}.",
    "The local economy relies on {economy}.",
    "The climate of {name} is {climate}.",
    "{name} holds a market every week in its old square.",
)
CITY_OPENERS = ("{name} has a long history.", "The geography of {name} shaped its growth.")

ORG_IDENTITY: dict[str, tuple[str, ...]] = {
    "company": ("{name} is {art_ind} {industry} company headquartered in {city}.",
                "{name} is {art_ind} {industry} company based in {city}."),
    "university": ("{name} is a university in {city}.", "{name} is a public university located in {city}."),
    "publisher": ("{name} is a publishing house based in {city}.",
                  "{name} is a book publisher headquartered in {city}."),
    "label": ("{name} is a record label based in {city}.",),
    "studio": ("{name} is a film studio based in {city}.",),
    "band": ("{name} is a band formed in {city}.", "{name} is a musical group from {city}."),
}
ORG_FOUNDED = ("{name} was founded in {year}.", "{name} was established in {year}.",
               "The {kind} was founded in {year}.")
BAND_FOUNDED = ("{name} was formed in {year}.", "The band was formed in {year}.")
ORG_FOUNDER = ("{name} was founded by {founder}.", "Its founder was {founder}.", "{founder} founded {name}.")
BAND_FOUNDER = ("{founder} formed {name}.", "The band was started by {founder}.")
ORG_OPENERS = ("The history of {name} is well documented.", "{name} grew from modest beginnings.")
ORG_FILLERS = (
    "The {kind} employs about {staff} people.",
    "{name} expanded rapidly during the {decade}s.",
    "Its emblem shows a {emblem}.",
    "{name} has been praised by {other}.",
)
BAND_FILLERS = ("The band toured widely.", "{name} released several records.", "{name} was admired by {other}.")

WORK_IDENTITY: dict[str, tuple[str, ...]] = {
    "novel": ("{name} is {art_genre} {genre} novel by {creator}.",
              "{name} is {art_genre} {genre} novel written by {creator}."),
    "film": ("{name} is {art_genre} {genre} film directed by {creator}.",),
    "album": ("{name} is {art_genre} {genre} album by {creator}.",
              "{name} is {art_genre} {genre} album recorded by {creator}."),
}
WORK_YEAR: dict[str, tuple[str, ...]] = {
    "novel": ("It was first published in {year}.", "{name} was published in {year}.", "The novel appeared in {year}."),
    "film": ("The film was released in {year}.", "{name} premiered in {year}."),
    "album": ("The album was released in {year}.", "{name} came out in {year}."),
}
WORK_PUBLISHER: dict[str, tuple[str, ...]] = {
    "novel": ("The book was published by {org}.", "{org} published the novel."),
    "film": ("It was produced by {org}.", "{org} produced the film."),
    "album": ("It was released on the {org} label.", "{org} released the album."),
}
WORK_OPENERS = ("The reception of {name} changed over time.", "{name} had a long afterlife.")
WORK_FILLERS = (
    "Critics praised its {quality}.",
    "{other} praised it in a review.",
    "It was later translated into several languages.",
    "A sequel was announced but never completed.",
    "The {kind} received {reception} reviews.",
)

# -- questions ----------------------------------------------------------------------------------
# (template, noun phrase allowed as subject)
Q = tuple[tuple[str, bool], ...]

PERSON_QUESTIONS: dict[str, Q] = {
    "birthplace": (("In which city was {s} born?", True), ("Where was {s} born?", True),
                   ("What is the birthplace of {s}?", True), ("{s} was born in which city?", True)),
    "birth_year": (("In what year was {s} born?", True), ("When was {s} born?", True),
                   ("What is the birth year of {s}?", True), ("{s} was born in what year?", True)),
    "occupation": (("What is {s}'s occupation?", False), ("What was the profession of {s}?", True)),
    "spouse": (("Who was {s} married to?", False), ("Who was the spouse of {s}?", True),
               ("Whom did {s} marry?", True)),
}
EMPLOYER_QUESTIONS: dict[str, Q] = {
    "company": (("Which company did {s} work for?", True), ("For which company did {s} work?", True),
                ("Who employed {s}?", True)),
    "publisher": (("Which publishing house did {s} work for?", True), ("Who employed {s}?", True)),
    "university": (("At which university did {s} work?", True), ("Which university employed {s}?", True)),
    "band": (("Which band was {s} a member of?", True), ("In which band did {s} play?", True)),
    "label": (("Which record label was {s} signed to?", True), ("On which label did {s} record?", True)),
    "studio": (("Which film studio did {s} work for?", True), ("Which studio employed {s}?", True)),
}
ORG_QUESTIONS: dict[str, Q] = {
    "founder": (("Who founded {s}?", True), ("Who was the founder of {s}?", True),
                ("{s} was founded by whom?", True)),
    "founded": (("In what year was {s} founded?", True), ("When was {s} established?", True),
                ("What year was {s} founded in?", True)),
    "hq": (("In which city is {s} headquartered?", True), ("Where is {s} based?", True),
           ("In which city are the headquarters of {s}?", True)),
    "industry": (("In which industry does {s} operate?", True), ("What industry is {s} in?", True)),
}
BAND_QUESTIONS: dict[str, Q] = {
    "founder": (("Who formed the band {s}?", False), ("Who founded {s}?", True)),
    "founded": (("In what year was the band {s} formed?", False), ("When was {s} formed?", True)),
    "hq": (("In which city was the band {s} formed?", False), ("Which city is {s} from?", True)),
}
UNIVERSITY_HQ: Q = (("In which city is {s} located?", True), ("Where is {s}?", True))
WORK_QUESTIONS: dict[str, dict[str, Q]] = {
    "novel": {
        "creator": (("Who wrote {s}?", False), ("Who is the author of the novel {s}?", False),
                    ("Who wrote the novel {s}?", False)),
        "year": (("In what year was the novel {s} published?", False), ("When was {s} first published?", False)),
        "publisher": (("Which publishing house published {s}?", False), ("Who published the novel {s}?", False)),
        "genre": (("What genre is the novel {s}?", False),),
    },
    "film": {
        "creator": (("Who directed {s}?", False), ("Who directed the film {s}?", False)),
        "year": (("In what year was the film {s} released?", False), ("When was {s} released?", False)),
        "publisher": (("Which studio produced the film {s}?", False), ("Which film studio made {s}?", False)),
        "genre": (("What genre of film is {s}?", False),),
    },
    "album": {
        "creator": (("Which artist recorded the album {s}?", False), ("Who recorded {s}?", False)),
        "year": (("In what year was the album {s} released?", False), ("When did {s} come out?", False)),
        "publisher": (("On which record label was {s} released?", False),
                      ("Which label released the album {s}?", False)),
        "genre": (("What genre of music is the album {s}?", False),),
    },
}
CITY_QUESTIONS: dict[str, Q] = {
    "region": (("In which region is {s} located?", True), ("{s} lies in which region?", True)),
    "country": (("In which country is {s}?", True), ("{s} is a city in which country?", False),
                ("In what country is {s} located?", True)),
    "founded": (("In what year was {s} founded?", True), ("When was the city of {s} founded?", False)),
    "river": (("Which river flows through {s}?", True), ("On which river does {s} lie?", True)),
    "landmark": (("Which landmark is {s} known for?", True),),
}
REGION_QUESTIONS: dict[str, Q] = {
    "country": (("{s} is a region of which country?", False), ("Which country is {s} part of?", False),
                ("In which country is {s}?", True)),
}

# Noun phrases that name the target of a relation from a description `{d}` of its source.
PERSON_NPS: dict[str, tuple[str, ...]] = {
    "birthplace": ("the birthplace of {d}", "the city where {d} was born", "the home town of {d}"),
    "spouse": ("the spouse of {d}", "the person {d} married"),
}
EMPLOYER_NPS: dict[str, tuple[str, ...]] = {
    "company": ("the company that employed {d}", "the employer of {d}"),
    "publisher": ("the publishing house {d} worked for", "the employer of {d}"),
    "university": ("the university where {d} worked",),
    "band": ("the band {d} played in",),
    "label": ("the record label {d} was signed to",),
    "studio": ("the film studio {d} worked for",),
}
ORG_NPS: dict[str, tuple[str, ...]] = {
    "founder": ("the founder of {d}", "the person who founded {d}"),
    "hq": ("the city where {d} is headquartered", "the home city of {d}"),
}
BAND_NPS: dict[str, tuple[str, ...]] = {"founder": ("the founder of {d}",), "hq": ("the home city of {d}",)}
UNIVERSITY_NPS: dict[str, tuple[str, ...]] = {"hq": ("the city where {d} is located",)}
WORK_NPS: dict[str, dict[str, tuple[str, ...]]] = {
    "novel": {"creator": ("the author of {d}", "the writer of the novel {d}"),
              "publisher": ("the publisher of {d}", "the publishing house that published {d}")},
    "film": {"creator": ("the director of {d}", "the director of the film {d}"),
             "publisher": ("the studio that produced {d}",)},
    "album": {"creator": ("the artist who recorded {d}", "the musician behind the album {d}"),
              "publisher": ("the record label that released {d}",)},
}
CITY_NPS: dict[str, tuple[str, ...]] = {"region": ("the region where {d} lies", "the region containing {d}")}
