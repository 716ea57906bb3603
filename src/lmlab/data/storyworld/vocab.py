"""The storyworld's word lists: names, kinds of characters, places, objects, weather, sentiment.

Generator and judge share these lists, which is what lets the judge parse a prompt's constraints
back out and check a response against them. The lists are disjoint by construction (no place
phrase contains an object or kind word, no name is an ordinary word), so a mention of one thing
can never be mistaken for another; tests/test_storyworld.py checks it.
"""
from __future__ import annotations


def _words(text: str) -> list[str]:
    """Whitespace-separated words; lists stay readable as blocks of text."""
    return text.split()


GIRL_NAMES = _words("""
Mia Emma Ava Sofia Chloe Zoe Lucy Anna Ella Nora Lena Maya Ivy Clara Alice Julia Nina Sara Leah
Hannah Ruth Amy Kate Jane Beth Tessa Greta Fiona Wendy Molly Polly Sally Tina Lisa Rosa Elsa Ada
Mila Lola Nell Ellie Gemma Jenny Kelly Laura Megan Naomi Olivia Paula Rita Sophie Tara Vera Yara
Zara Abby Becky Carla Dina Erin Freya Gina Heidi Isla Jill Kira Lara Mara Nadia Olga Pia Rhea
Selma Thea Uma Vivian Willa Yuki Zelda Alma Bella Cora Daria Edith Flora Gwen Hilda Ingrid Keira
Livia Marta Nova Priya Rina Sana Tilly Una Vicky Wanda Yasmin Zoey Aisha Bianca Celia Dora Eva
Fatima Gloria Helen Ines Josie Maria Noor Petra Rosie Stella Talia Ursula Valeria Amara Beatrix
Cleo Delia Elena Frida Hana Ida Juno Kaya Leila Mabel Nia Orla Saskia Tove Vida Yvonne Agnes Bonnie
Cecile Dolly Esme Fern Hattie Imogen Janet Lottie Minnie Odette Philippa Sylvie Trudy Adele Brenda Carmen
Dahlia Elise Fleur Georgia Harriet Isabel Jasmine Katya Louisa Martha Nadine Octavia Penny Rebecca Sabrina
Tamara Ulla Veronica Winnie Zinnia Annika Bettina Chiara Dagny Eloise Gabriela Helga Irene Jocelyn Kirsten
Liesel Marisol Nanette
""")

BOY_NAMES = _words("""
Tom Max Leo Sam Ben Jack Tim Noah Liam Oscar Felix Hugo Theo Finn Luke Adam Eli Ivan Omar Paul
Ryan Sean Toby Victor Zack Bruno Carlos Dan Eric Fred George Harry Isaac Jonah Kevin Louis Marco
Nick Otto Pedro Rafael Simon Tony Umar Vince Walter Xavier Yusuf Zane Aaron Billy Charlie David
Edgar Frank Gabe Henry Igor Jamal Karl Lars Milo Nate Ollie Peter Ravi Stefan Teddy Ulrich Vlad
Wade Yuri Arlo Boris Cody Dylan Emil Ezra Gus Hank Ian Joel Kai Lenny Mateo Ned Owen Pablo Rudy
Seth Tariq Vito Wes Abe Benny Caleb Dario Elias Ferris Gideon Hamid Ibrahim Jasper Kenji Luca
Malik Nico Orson Percy Rory Silas Tobias Viktor Willy Yosef Zeke Andre Cyrus Dmitri Enzo Fabio
Hector Jude Kofi Lionel Moses Nils Oliver Quentin Reuben Sami Tristan Vern Wyatt Anton Bram Colin
Desmond Emmett Flynn Gordon Harvey Jonas Kurt Leon Magnus Nolan Ross Sidney Ted Alfie Bertie Ambrose
Barnaby Cedric Dominic Edmund Fergus Gilbert Horace Ignatius Jerome Kendrick Lorenzo Maxwell Neville Osgood
Phineas Rupert Sebastian Thaddeus Ulysses Vaughn Winston Alastair Benedict Clement Declan Everett Franklin
Gregor Humphrey Ingmar Jethro Lucian Mortimer
""")

NAMES = GIRL_NAMES + BOY_NAMES

# kind -> gender it forces ("f", "m") or "" (any). Animals and roles take the name's gender.
PEOPLE = {"girl": "f", "boy": "m", "princess": "f", "prince": "m", "queen": "f", "king": "m"}
ROLES = _words("""farmer baker teacher doctor painter pilot sailor dragon robot fairy knight wizard giant elf
pirate clown gardener nurse chef astronaut inventor magician singer dancer explorer librarian shepherd
sculptor builder""")
BIRDS = _words("bird duck owl hen goose penguin robin parrot chick swan puffin flamingo peacock sparrow pelican stork")
ANIMALS = _words("""dog cat rabbit bunny fox bear mouse frog pig cow horse sheep goat lion tiger elephant
monkey panda turtle squirrel deer hedgehog puppy kitten koala zebra giraffe hippo dolphin seal otter
beaver raccoon badger mole bee ladybug snail lamb pony donkey camel kangaroo wolf crab hamster lizard
moose octopus llama chipmunk ferret gorilla rhino cheetah leopard walrus""")
KINDS = list(PEOPLE) + ROLES + BIRDS + ANIMALS

# How a kind is described ("a little girl", "a kind farmer").
YOUNG_ADJ = _words("little small young curious brave cheerful clever gentle playful tiny shy clumsy fluffy quick bright-eyed")
GROWN_ADJ = _words("kind friendly busy cheerful clever gentle wise young brave jolly patient tall humble sleepy")

# place -> preposition used for "being there" ("on the farm"); one word or a fixed phrase.
PLACES = {
    "park": "at", "beach": "on", "forest": "in", "farm": "on", "garden": "in", "zoo": "at",
    "school": "at", "library": "at", "lake": "by", "hill": "on", "river": "by", "market": "at",
    "playground": "at", "meadow": "in", "castle": "in", "cave": "in", "bakery": "at", "pond": "by",
    "village": "in", "jungle": "in", "desert": "in", "island": "on", "mountain": "on", "harbor": "at",
    "museum": "at", "circus": "at", "toy shop": "at", "train station": "at", "backyard": "in",
    "kitchen": "in", "barn": "in", "orchard": "in", "valley": "in", "woods": "in", "swamp": "in",
    "seaside": "at", "campsite": "at", "lighthouse": "at", "candy shop": "at", "field": "in",
    "pet shop": "at", "ice rink": "at", "swimming pool": "at", "playroom": "in", "treehouse": "in",
    "attic": "in", "city square": "in", "fairground": "at", "snow fort": "in", "sandbox": "in",
    "windmill": "by", "greenhouse": "in", "bridge": "by", "bus stop": "at", "post office": "at", "rooftop": "on",
    "porch": "on", "tide pool": "by", "ice cream shop": "at", "bookshop": "at", "cornfield": "in",
}

OBJECTS = _words("""ball kite doll hat scarf balloon book drum boat truck bike wagon shovel bucket umbrella
blanket pillow cup bowl spoon basket backpack shell feather pebble acorn ribbon button crayon pencil
brush map key lamp clock bell whistle flute guitar puzzle marble sock mitten boot shoe jacket cape
crown necklace bracelet sticker notebook wand sled rope ladder net jar bottle apple cookie cake
carrot bone flag tent camera mirror comb trumpet violin scooter skateboard helmet glove candle
lantern teapot kettle pinwheel yoyo rocket car whistle compass telescope harmonica tambourine xylophone
puppet rattle frisbee seashell medal trophy badge locket sweater raincoat wheelbarrow teacup magnet lunchbox
envelope postcard kaleidoscope""")
OBJECTS = list(dict.fromkeys(OBJECTS))  # keep order, drop the accidental duplicate

COLORS = _words("red blue green yellow pink purple orange brown white black golden silver")

WEATHER = _words("sunny rainy windy snowy cloudy foggy cold chilly stormy misty")

# Grown-ups who appear beside the main character; never a constraint, so not in KINDS.
HELPERS = {"mom": "f", "dad": "m", "grandma": "f", "grandpa": "m", "aunt": "f", "uncle": "m"}

# Ending sentiment. Every happy ending's last sentence uses a HAPPY word and no SAD word, and the
# other way round, so the judge's lexicon reading of the last sentence recovers the ending.
HAPPY_WORDS = frozenset(_words("""happy happily happier smiled smile smiles smiling laughed laugh laughing
glad joy joyful hugged hug giggled cheered proud fun best love loved wonderful great thanked"""))
SAD_WORDS = frozenset(_words("""sad sadly cried cry crying tears lonely alone upset unhappy gloomy ruined
broken missed sighed frowned hurt"""))

PRONOUNS = {
    "f": {"he": "she", "him": "her", "his": "her", "himself": "herself"},
    "m": {"he": "he", "him": "him", "his": "his", "himself": "himself"},
}


def hands(kind: str) -> str:
    """What a character holds things with, so a duck never has hands."""
    if kind in BIRDS:
        return "wings"
    if kind in ANIMALS or kind == "dragon":
        return "paws"
    return "hands"


def is_young(kind: str) -> bool:
    return kind in ("girl", "boy", "prince", "princess") or kind in ANIMALS or kind in BIRDS

# Scenery that fills slots in the arcs; none of these words is a name, kind, place or object.
ACTIVITIES = [
    "played tag", "built a tower of sticks", "picked berries", "watched the clouds", "drew pictures in the dirt",
    "sang silly songs", "looked for bugs", "skipped along the path", "counted the clouds in the sky",
    "played hide and seek", "made a daisy chain", "rolled down the grass", "jumped over puddles",
    "told funny stories", "danced in a circle", "chased the butterflies", "looked at the tall trees",
    "built a little house of leaves", "made music with sticks", "hunted for pretty stones",
    "played leapfrog", "spun around until everything was dizzy", "balanced on a log", "blew dandelion seeds",
    "drew pictures with chalk", "played follow the leader", "looked for four-leaf clovers", "hummed a tune",
    "practiced cartwheels", "made mud pies", "climbed a little tree", "waved at passing clouds",
]
SNACKS = [
    "a sandwich", "some berries", "warm soup", "a peach", "some grapes", "a muffin", "honey bread",
    "a pear", "some cheese", "a bun", "some nuts", "a plum", "some crackers", "a banana", "some toast",
    "some porridge", "some cherries", "a slice of melon", "a pancake", "some popcorn", "a pretzel",
    "some raisins", "a corn cob", "a jam tart", "some oat biscuits", "a boiled egg", "a glass of milk",
]
SPOTS = [
    "under a bench", "behind a big rock", "in the tall grass", "next to an old log", "under a pile of leaves",
    "behind a bush", "near a puddle", "under a wooden table", "beside a fence", "in a patch of weeds",
    "under a soft cushion", "behind a flower pot", "next to a water tap", "on top of a wall",
    "inside a hollow stump", "beneath a wooden bench", "among the daisies", "under a cart", "by the gate",
    "in a clump of moss", "behind the shed", "under a heap of straw",
]
SIGHTS = [
    "a rainbow", "a shiny beetle", "a tall sunflower", "a line of ants", "a cloud shaped like a whale",
    "a wriggly worm", "a sparkly stone", "a busy spider", "a fluffy cloud shaped like a heart",
    "a tiny nest", "a bright butterfly", "a big round puddle", "a funny shadow", "a trail of footprints",
    "a patch of poppies", "a shimmering dragonfly", "a rainbow of tulips", "a family of ducklings",
    "an old stone wall", "a huge mushroom", "a glittering stream", "a tree full of blossoms", "a wobbly fence",
]
SOUNDS = ["a soft cry", "a strange noise", "a loud bang", "a tiny squeak", "a little sob", "a rustle in the leaves",
          "a creak", "a thump", "a whimper", "a faint tapping", "a low rumble", "a sniffle"]
MOODS = _words("excited curious cheerful eager calm hopeful merry bouncy restless dreamy chatty")
