"""Story arcs: the beats of each plot, with several phrasings per beat and both endings.

A template is one sentence. `[a|b|c]` picks one synonym; `{slot}` is filled from the story's cast
and setting (`{Name}`, `{he}`/`{He}`, `{his}`, `{him}`, `{himself}`, `{kind}`, `{desc}`, `{place}`,
`{at}`, `{obj}`, `{color}`, `{weather}`, `{hands}`, the friend's `{Friend}`, `{fkind}`, `{fdesc}`,
`{fhe}`/`{FHe}`, `{fhim}`, `{fhis}`, the grown-up's `{helper}`, `{hhe}`/`{Hhe}`, `{hhim}`, and
scenery `{activity}`, `{snack}`, `{spot}`, `{sight}`, `{sound}`, `{mood}`).

Rules that keep stories coherent and the gold judge exact: one sentence per template; quotes hold
one sentence and are followed by a lowercase verb (`"Hi," said {Name}.`); the first beat names
the main character and the coloured object; the last sentence of a happy ending has a word of
`vocab.HAPPY_WORDS` and none of `vocab.SAD_WORDS`, and the other way round for a sad ending.
A beat whose first alternative is "?" is optional (kept half of the time).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arc:
    name: str
    cast: str                                  # "" | "friend" | "helper": who else is in it
    beats: tuple[tuple[str, ...], ...]         # each beat: alternative phrasings
    happy: tuple[tuple[str, ...], ...]         # each alternative: 1-2 sentences
    sad: tuple[tuple[str, ...], ...]
    summary: tuple[str, str]                   # (happy, sad): one sentence, past tense
    titles: tuple[str, ...]
    weather: str | None = None                 # an arc that needs a weather forces it


OPENINGS: tuple[tuple[str, ...], ...] = (
    ("One {weather} [morning|day|afternoon], a {desc} {kind} named {Name} [went|walked|set off] to the {place}.",),
    ("Once upon a time, there was a {desc} {kind} [named|called] {Name}.",
     "One {weather} day, {he} [went|walked|set off] to the {place}."),
    ("It was a {weather} day {at} the {place}.",
     "{Name}, a {desc} {kind}, [was there early|had just arrived|was feeling {mood}]."),
    ("{Name} was a {desc} {kind} who [loved|liked] the {place}.",
     "It was a {weather} [morning|day], so {he} [went|hurried] there [early|after breakfast]."),
    ("On a {weather} [morning|afternoon], {Name} the {kind} [went|walked] to the {place}.",),
    ("There once was a {desc} {kind} named {Name}.",
     "{He} [liked|loved] to visit the {place} on {weather} days."),
    ("Not long ago, a {desc} {kind} called {Name} [lived|had a home] near the {place}.",
     "The [morning|day] was {weather} and [quiet|still|full of birdsong]."),
    ("The [morning|day] was {weather} when {Name}, a {desc} {kind}, [arrived at|came to|wandered into] the {place}.",),
    ("{Name} the {kind} woke up early on a {weather} [morning|day] and [skipped|hurried|marched] off to the {place}.",),
    ("In a [cozy|tiny|bright] home near the {place} lived a {desc} {kind} named {Name}.",
     "[That|One] {weather} [morning|afternoon], {he} [went out|stepped outside] to explore."),
)

# Scene-setting sentences, one inserted after the opening half of the time when a story has room.
DETAILS: tuple[str, ...] = (
    "The air smelled of [pine needles|fresh bread|wet grass|sea salt|wildflowers|warm hay].",
    "Crickets were chirping somewhere [nearby|in the distance|under the hedges].",
    "Tall [reeds|weeds|grasses] [swayed|rustled|waved] in the breeze.",
    "Leaves [crunched|crackled|rustled] under every step.",
    "The sky was [pale|deep|soft] and [wide|clear|full of little clouds].",
    "A [gentle|soft|light] breeze [drifted|danced|wandered] through the [trees|bushes|hedges].",
    "Everything was [quiet|peaceful|calm], except for the [humming|buzzing] of [insects|flies|gnats].",
    "[Dewdrops|Raindrops] [sparkled|glittered|glistened] [on the path|in the grass|on every leaf].",
    "A [woodpecker|cuckoo|blackbird|magpie] [tapped|called|chattered] from a [distant|nearby] tree.",
    "The path was [lined|dotted] with [buttercups|clover|little stones|tiny mushrooms].",
    "Smoke [curled|drifted] up from a [chimney|faraway chimney] into the sky.",
    "Somewhere, a [gate|door|window] [creaked|banged|rattled] in the wind.",
)

ARCS: tuple[Arc, ...] = (
    Arc("lost_found", "", (
        ("{Name} had a {color} {obj} that {he} loved [very much|more than anything].",
         "{Name} [brought|carried] {his} {color} {obj} [everywhere|with {him}]."),
        ("?", "{He} [played|ran around] with it and {activity}.", "[First|For a while], {he} {activity}."),
        ("[Then|But then|Suddenly|All of a sudden|A moment later], the {obj} was nowhere to be seen.",
         "When {he} looked again, {his} {obj} was [missing|not there]."),
        ("{Name} looked [everywhere|high and low|all around the {place}|under every leaf|in every corner|behind every bush].",
         "\"Where is my {obj}?\" [asked|wondered] {Name}."),
    ), happy=(
        ("At last, {he} found the {obj} {spot}.", "{He} hugged it and smiled."),
        ("[Soon|After a while], {he} spotted something {color} {spot}.", "It was {his} {obj}, and {Name} was so happy!"),
        ("{Name} found {his} {obj} {spot} and laughed with joy.",),
    ), sad=(
        ("{Name} looked until it was dark, but the {obj} was [still missing|not found].", "{He} walked home feeling sad."),
        ("{He} never found {his} {color} {obj}, and {he} cried all the way home.",),
        ("The {obj} was lost for good.", "{Name} sat down and cried [big tears|quietly]."),
    ), summary=("{Name} lost {his} {color} {obj} {at} the {place} and found it again.",
                "{Name} lost {his} {color} {obj} {at} the {place} and never found it."),
       titles=("The Lost {Obj}", "{Name} and the {Color} {Obj}", "Where Is the {Obj}?")),

    Arc("sharing", "friend", (
        ("{Name} [had|brought] a {color} {obj} to the {place}.", "{Name} was playing with a {color} {obj}."),
        ("{Friend}, a {fdesc} {fkind}, [came over|walked up|wandered by|trotted over] and [looked at|watched|stared at|admired] the {obj}.",),
        ("\"Can I play with it too?\" asked {Friend}.", "\"May I have a turn?\" asked {Friend} [softly|politely]."),
        ("?", "{Name} held the {obj} [tight|close] and thought for a moment.", "{Name} did not know what to say."),
    ), happy=(
        ("{Name} said, \"Yes, let's play together.\"", "They took turns all day and laughed a lot."),
        ("{Name} gave {Friend} the {obj} with a smile.",),
        ("\"We can share it,\" said {Name}.", "The two friends had so much fun together."),
    ), sad=(
        ("\"No, it is mine,\" said {Name}.", "{Friend} walked away, and {Name} felt sad and lonely."),
        ("{Name} would not share the {obj}.", "{Friend} went home, and {Name} played alone and felt sad."),
    ), summary=("{Name} shared {his} {color} {obj} with {Friend} {at} the {place}.",
                "{Name} would not share {his} {color} {obj} with {Friend} and ended up alone."),
       titles=("Sharing Is Caring", "{Name} and {Friend}", "The {Color} {Obj}")),

    Arc("fear", "", (
        ("{Name} held {his} {color} {obj} close, because {he} was [afraid|scared] of the [dark corners|big shadows|loud noises] there.",),
        ("?", "{His} {obj} felt safe in {his} {hands}.", "Even the {obj} did not make {him} feel brave."),
        ("[Then|Just then], {he} heard {sound}.",),
        ("\"I can be brave,\" {he} [said|whispered] to {himself}.", "{Name} took a deep breath and counted to ten."),
    ), happy=(
        ("{He} stepped forward and looked.", "It was only the wind, and {Name} laughed at {himself}."),
        ("{Name} was brave and found that it was only a squeaky gate.", "{He} smiled, proud of {himself}."),
        ("It was just a friendly neighbor saying hello.", "{Name} felt proud and happy."),
    ), sad=(
        ("But the noise came again, and it was too scary.", "{Name} ran home crying."),
        ("{Name} dropped {his} {obj} and ran away in tears.",),
    ), summary=("{Name} was afraid {at} the {place} but found the courage to look.",
                "{Name} was afraid {at} the {place} and ran home crying."),
       titles=("{Name} Is Brave", "The Noise {At} the {Place}", "A Brave Little {Kind}")),

    Arc("trip", "helper", (
        ("{Name} and {his} {helper} [packed|brought|gathered] {snack} and a {color} {obj} for the [trip|journey|outing].",),
        ("On the way, they [sang songs|told jokes|watched the clouds go by|played a guessing game|counted fence posts|waved at strangers].", "The road was long, and {Name} [asked many questions|looked out of the window]."),
        ("?", "At the {place}, they saw {sight}.", "When they arrived, {Name} pointed at {sight}."),
    ), happy=(
        ("They ate {snack} and played with the {obj} until the sun went down.", "It was the best trip ever, and {Name} smiled all the way home."),
        ("{Name} hugged {his} {helper} and said it was a wonderful day.",),
    ), sad=(
        ("Then it began to pour, and they had to go home early.", "{Name} was sad that the trip was over so soon."),
        ("{Name} left the {obj} behind by mistake.", "On the way home, {he} missed it and felt upset."),
    ), summary=("{Name} went on a trip to the {place} with {his} {helper} and had a wonderful time.",
                "{Name} went on a trip to the {place} with {his} {helper}, but it ended badly."),
       titles=("A Trip to the {Place}", "{Name}'s Big Day Out", "The Long Road")),

    Arc("quarrel", "friend", (
        ("{Name} and {his} friend {Friend} were playing with a {color} {obj}.",),
        ("[Soon|Then|Before long] they both [wanted|grabbed for|reached for] the {obj} at the same time.",),
        ("\"It is my turn!\" shouted {Name}.", "{Name} pulled the {obj} and said, \"Give it to me!\""),
        ("?", "{Friend} pulled back and shouted, \"No, it is mine!\"", "{Friend} stamped {fhis} feet and would not let go."),
    ), happy=(
        ("After a while, they both said sorry.", "They took turns with the {obj} and were happy friends again."),
        ("{Name} let go and said, \"You can go first.\"", "{Friend} smiled, and they hugged."),
    ), sad=(
        ("They did not talk for the rest of the day.", "{Name} sat alone and felt sad."),
        ("{Friend} ran home, and {Name} was left all alone with the {obj}.", "{He} felt lonely and upset."),
    ), summary=("{Name} and {Friend} fought over a {color} {obj} but made up.",
                "{Name} and {Friend} fought over a {color} {obj} and stayed apart."),
       titles=("The Big Fight", "{Name} and {Friend} Make Up", "Whose {Obj} Is It?")),

    Arc("lesson", "helper", (
        ("{Name} liked to throw {his} {color} {obj} high into the air.",),
        ("{His} {helper} said, \"Be careful, or it might get lost.\"",),
        ("{Name} did not listen and [threw|tossed|flung] it [higher and higher|even higher].",),
        ("?", "The {obj} flew over {his} head and came down {spot}.", "A gust of wind caught the {obj}."),
    ), happy=(
        ("{His} {helper} helped {him} get it back.", "{Name} learned to listen, and {he} smiled."),
        ("The {obj} landed safely, and {Name} said, \"I will be careful now.\"", "{His} {helper} gave {him} a big hug."),
    ), sad=(
        ("The {obj} fell into deep water and floated away.", "{Name} cried and wished {he} had listened."),
        ("The {obj} landed hard and was broken.", "{Name} was very sad and sorry {he} had not listened."),
    ), summary=("{Name} learned to listen to {his} {helper} after nearly losing {his} {color} {obj}.",
                "{Name} did not listen to {his} {helper} and lost {his} {color} {obj}."),
       titles=("{Name} Learns to Listen", "Be Careful, {Name}", "The Flying {Obj}")),

    Arc("surprise", "friend", (
        ("{Friend}, a {fdesc} {fkind}, had a surprise for {Name}: a {color} {obj}.",),
        ("{FHe} [hid|tucked|kept] the {obj} behind {fhis} back.", "{FHe} kept it a secret all morning."),
        ("\"Close your eyes,\" said {Friend}.", "\"I have something for you,\" {Friend} told {Name}."),
    ), happy=(
        ("{Name} opened {his} eyes and saw the {color} {obj}.", "\"Thank you!\" {he} said with a big smile."),
        ("{Name} jumped up and down with joy.",),
    ), sad=(
        ("But the {obj} had fallen in the mud and was ruined.", "{Name} and {Friend} looked at it with tears in their eyes."),
        ("When {Name} opened {his} eyes, the {obj} was gone.", "{Friend} could not find it, and they both felt sad."),
    ), summary=("{Friend} surprised {Name} with a {color} {obj} {at} the {place}.",
                "{Friend} tried to surprise {Name} with a {color} {obj}, but it went wrong."),
       titles=("The Surprise", "A Gift for {Name}", "{Friend}'s Secret")),

    Arc("rainy_day", "helper", (
        ("{Name} wanted to play with {his} {color} {obj}, but dark clouds [came|rolled in].",),
        ("[Soon|Then|Before long] the rain began to [fall|patter|pour], drip, drop, drip.",),
        ("?", "{Name} and {his} {helper} hid under a big tree.", "{Name} looked up at the gray sky."),
    ), happy=(
        ("They splashed in the puddles until the sun came out.", "{Name} laughed and said it was the best rainy day."),
        ("{His} {helper} opened a big coat over them both, and they laughed in the rain.",),
    ), sad=(
        ("The rain did not stop, and the {obj} got soaked and ruined.", "{Name} went home wet and sad."),
        ("They had to go home, and {Name} sighed at the window.", "{He} was sad and gloomy all day."),
    ), summary=("{Name} had fun in the rain {at} the {place}.",
                "Rain spoiled {Name}'s day {at} the {place}."),
       titles=("A Rainy Day", "{Name} and the Rain", "Puddles {At} the {Place}"), weather="rainy"),

    Arc("helping", "friend", (
        ("{Name} was playing with {his} {color} {obj} when {he} heard {sound}.",),
        ("It was {Friend}, a {fdesc} {fkind}, who could not find the way home.",),
        ("\"What is wrong?\" asked {Name}.", "{Name} walked over and asked, \"Are you lost?\""),
        ("?", "{Friend} nodded and wiped {fhis} eyes.", "\"I cannot find my home,\" said {Friend}."),
    ), happy=(
        ("{Name} held {Friend}'s hand and they walked until they found {fhis} home.", "{Friend} smiled and thanked {Name}."),
        ("{Name} gave {Friend} the {obj} to hold and helped {fhim} find the way.", "They got there, and everyone cheered."),
    ), sad=(
        ("{Name} tried to help, but they could not find the way.", "{Friend} was still lost, and they both felt sad."),
        ("{Name} had to go home before {he} could help.", "{He} thought about {Friend} all night and felt upset."),
    ), summary=("{Name} helped {Friend} find the way home from the {place}.",
                "{Name} tried to help {Friend} get home but could not."),
       titles=("{Name} Helps a Friend", "The Way Home", "A Helping Hand")),

    Arc("new_friend", "friend", (
        ("{Name} was playing alone with {his} {color} {obj}.",),
        ("?", "{He} wished {he} had a friend to play with.", "{He} looked around at the other children."),
        ("Then {he} saw a {fdesc} {fkind} named {Friend}.",),
        ("\"Do you want to play?\" asked {Name}.", "{Name} walked over and said, \"Hello, my name is {Name}.\""),
    ), happy=(
        ("{Friend} said yes, and they played with the {obj} all day.", "From that day on, they were best friends."),
        ("{Friend} smiled, and soon they were laughing together.",),
    ), sad=(
        ("But {Friend} was too shy and ran away.", "{Name} was alone again and felt sad."),
        ("{Friend} had to go home, and {Name} was sad to play alone again.",),
    ), summary=("{Name} made a new friend, {Friend}, {at} the {place}.",
                "{Name} tried to make friends with {Friend}, but {Friend} went away."),
       titles=("A New Friend", "{Name} Meets {Friend}", "Friends {At} the {Place}")),

    Arc("making", "helper", (
        ("{Name} wanted to decorate {his} {color} {obj} for {his} {helper}.",),
        ("{He} added [stars|dots|stripes|tiny hearts|swirls|zigzags|little moons] with great care.", "{He} worked on it [all afternoon|for a long time]."),
        ("?", "It was hard work, but {he} kept trying.", "Some parts went wrong, so {he} started again."),
    ), happy=(
        ("When {his} {helper} saw it, {hhe} gave {Name} a big hug.", "{Name} felt proud and happy."),
        ("{His} {helper} said it was the best gift ever, and {Name} smiled.",),
    ), sad=(
        ("But the paint smeared, and the {obj} was ruined.", "{Name} cried because all the work was spoiled."),
        ("{Name} dropped the {obj} and it was broken.", "{He} sat down, very sad."),
    ), summary=("{Name} decorated a {color} {obj} as a gift for {his} {helper}.",
                "{Name} tried to decorate a {color} {obj} for {his} {helper}, but it was spoiled."),
       titles=("A Gift for {Helper}", "{Name} Makes Something", "The {Color} {Obj}")),

    Arc("race", "friend", (
        ("{Name} and {his} friend {Friend}, a {fdesc} {fkind}, had a race, and the winner would hold the {color} {obj}.",),
        ("\"Ready, set, go!\" shouted {Name}.",),
        ("They [ran|raced|dashed|sprinted] as fast as they could.", "They ran and ran, side by side."),
    ), happy=(
        ("{Name} won by a nose, but {he} shared the {obj} anyway.", "They both laughed and cheered."),
        ("They crossed the line together, laughing.",),
    ), sad=(
        ("{Name} tripped and hurt {his} knee.", "{He} did not win, and {he} cried."),
        ("{Friend} won and kept the {obj}.", "{Name} walked home slowly, feeling sad."),
    ), summary=("{Name} raced {Friend} for a {color} {obj} and they shared it.",
                "{Name} raced {Friend} for a {color} {obj} and lost."),
       titles=("The Big Race", "{Name} and {Friend} Race", "Ready, Set, Go!")),

    Arc("lost_way", "", (
        ("{Name} followed a path, carrying {his} {color} {obj}.",),
        ("{He} [walked and walked|wandered on and on|kept going] until nothing looked [the same|familiar].",),
        ("?", "{He} saw {sight}, but it did not help.", "\"Which way is home?\" wondered {Name}."),
    ), happy=(
        ("Then {he} saw {his} own footprints and followed them back.", "{Name} was home in time and laughed with relief."),
        ("A kind neighbor showed {him} the way, and {Name} smiled.",),
    ), sad=(
        ("It got dark, and {Name} sat down and cried.",),
        ("{Name} walked in circles until {he} was tired.", "{He} sat down, lonely and upset."),
    ), summary=("{Name} got lost {at} the {place} and found the way home.",
                "{Name} got lost {at} the {place} and could not find the way."),
       titles=("Lost {At} the {Place}", "{Name} Finds the Way", "Which Way Is Home?")),

    Arc("patience", "helper", (
        ("{Name} planted a seed and put {his} {color} {obj} next to it as a marker.",),
        ("[Every day|Each morning|Again and again] {he} asked {his} {helper}, \"Is it growing yet?\"",),
        ("\"Be patient,\" said {his} {helper}.",),
        ("?", "{Name} waited and watered it every morning.", "Days went by, and nothing happened."),
    ), happy=(
        ("One morning, a little green sprout popped up.", "{Name} laughed and hugged {his} {helper}."),
        ("At last the seed grew into a beautiful flower, and {Name} was proud.",),
    ), sad=(
        ("But the seed never grew.", "{Name} looked at the empty soil and felt sad."),
        ("A storm washed the seed away, and {Name} cried.",),
    ), summary=("{Name} planted a seed and learned to be patient until it grew.",
                "{Name} planted a seed, but it never grew."),
       titles=("The Little Seed", "{Name} Waits", "Is It Growing Yet?")),

    Arc("bedtime", "helper", (
        ("That night, {Name} could not fall asleep, so {he} held {his} {color} {obj} [tight|close].",),
        ("The room was [dark|quiet|very still], and the wind made [odd|spooky|funny] sounds.",),
        ("?", "{He} [tiptoed|crept] to the window and looked at the [stars|moon].", "{He} counted stars but was still wide awake."),
        ("{His} {helper} came in and [sang|hummed] a [soft|gentle] song.",),
    ), happy=(
        ("{Name} yawned, closed {his} eyes and fell asleep with a smile.",),
        ("{He} snuggled under the covers.", "Soon {he} was asleep and had happy dreams."),
    ), sad=(
        ("But {Name} stayed awake all night.", "In the morning {he} was tired and grumpy and cried."),
        ("A loud storm kept {him} awake, and {Name} cried under the covers.",),
    ), summary=("{Name} could not sleep until {his} {helper} sang a song.",
                "{Name} could not sleep all night."),
       titles=("Time for Bed, {Name}", "The Sleepless Night", "{Name} and the Moon")),

    Arc("picnic", "helper", (
        ("{Name} and {his} {helper} [spread out|laid down] a cloth for a picnic, with {snack} and a {color} {obj}.",),
        ("They [ate|shared] {snack} and [watched|looked at] {sight}.",),
        ("?", "A [cheeky|hungry] ant [crawled|marched] over the cloth.", "The breeze [tugged|pulled] at the corners of the cloth."),
    ), happy=(
        ("After lunch, they lay in the [grass|sunshine] and [laughed|giggled] together.",),
        ("It was the best picnic ever, and {Name} hugged {his} {helper}.",),
    ), sad=(
        ("Then a strong gust blew the food into the dirt, and they had nothing left to eat.", "{Name} [frowned|sighed] and went home sad."),
        ("Ants got into all the food, and {Name} was upset.",),
    ), summary=("{Name} had a lovely picnic {at} the {place} with {his} {helper}.",
                "{Name}'s picnic {at} the {place} was spoiled."),
       titles=("The Picnic", "A Picnic {At} the {Place}", "Lunch with {Helper}")),

    Arc("birthday", "friend", (
        ("It was {Name}'s birthday, and {he} [wore|carried] {his} {color} {obj} [all day|proudly].",),
        ("{He} [invited|asked] {his} friend {Friend}, a {fdesc} {fkind}, to [the party|come and play].",),
        ("?", "They hung paper chains and [sang the birthday song|played musical chairs].", "They [wrapped|tied] [paper|string] around the chairs."),
        ("\"Happy birthday!\" [sang|shouted] {Friend}.",),
    ), happy=(
        ("They shared {snack} and played games until the sun went down.", "{Name} said it was the best birthday ever."),
        ("{Name} made a wish and laughed with {his} friend.",),
    ), sad=(
        ("But {Friend} [fell ill|got a bad tummy ache] and had to go home early.", "{Name} sat by the window, feeling lonely on {his} birthday."),
        ("The party ended early, and {Name} cried.",),
    ), summary=("{Name} had a birthday party with {Friend}.",
                "{Name}'s birthday party with {Friend} ended badly."),
       titles=("{Name}'s Birthday", "The Party", "A Birthday Wish")),

    Arc("tidy", "helper", (
        ("{Name} had [toys|things] everywhere, and {his} {color} {obj} was [buried|hidden] under the mess.",),
        ("\"Please tidy up,\" said {his} {helper}.",),
        ("{Name} [grumbled|groaned] but started to [pick things up|put things away].", "{Name} said, \"I will do it later.\""),
    ), happy=(
        ("Soon everything was neat, and {he} found {his} {obj} at the bottom of the pile.", "{Name} smiled and said tidying was fun after all."),
        ("{His} {helper} helped, and they finished together, laughing.",),
    ), sad=(
        ("{Name} never tidied, and the {obj} got stepped on and broken.", "{He} cried over the pieces."),
        ("{Name} could not find anything in the mess and felt upset.",),
    ), summary=("{Name} tidied up and found {his} {color} {obj}.",
                "{Name} did not tidy up, and {his} {color} {obj} was spoiled."),
       titles=("Tidy Up, {Name}", "The Big Mess", "Under the Pile")),

    Arc("snowman", "helper", (
        ("{Name} [wrapped|bundled] up warm and took {his} {color} {obj} outside.",),
        ("Together with {his} {helper}, {he} [rolled|pushed] a [big|huge] snowball.",),
        ("?", "They used the {obj} to [decorate|finish] the snowman.", "They gave the snowman [two stone eyes|a twig nose|a crooked smile]."),
    ), happy=(
        ("The snowman looked [so funny|just right], and {Name} laughed and clapped.",),
        ("They drank cocoa by the fire, proud of their snowman.",),
    ), sad=(
        ("The sun came out and the snowman melted into a puddle.", "{Name} looked at it and felt sad."),
        ("A gust of wind knocked the snowman over, and {Name} cried.",),
    ), summary=("{Name} built a snowman with {his} {helper} {at} the {place}.",
                "{Name} built a snowman, but it did not last."),
       titles=("The Snowman", "{Name} and the Snowman", "A Snowy Day"), weather="snowy"),

    Arc("kindness", "friend", (
        ("{Name} was [walking|skipping] along with {his} {color} {obj} when {he} saw {Friend}, a {fdesc} {fkind}.",),
        ("{Friend} looked [hungry|tired and hungry|very thin] and had nothing to eat.",),
        ("?", "{Name} [remembered|thought about] the {snack} in {his} pocket.", "{Name} was a little hungry too."),
    ), happy=(
        ("{Name} shared {snack} with {Friend}.", "{Friend} [smiled|laughed], and they became good friends."),
        ("{Name} gave {Friend} {snack}, and they ate together happily.",),
    ), sad=(
        ("{Name} walked past without [stopping|a word].", "Later {he} thought about {Friend} and felt sad."),
        ("By the time {Name} came back with food, {Friend} was gone, and {Name} felt sad.",),
    ), summary=("{Name} shared food with a hungry {fkind} named {Friend}.",
                "{Name} did not help a hungry {fkind} named {Friend}."),
       titles=("A Kind Heart", "{Name} Shares", "Food for {Friend}")),

    Arc("treasure_hunt", "friend", (
        ("{Friend}, a {fdesc} {fkind}, hid a {color} {obj} and gave {Name} a list of clues.",),
        ("The first clue said, \"Look where the water [drips|trickles].\"",),
        ("?", "{Name} [searched|hunted] [behind the shed|under the steps|near the old fence] and found the next clue.",
         "{Name} [scratched|tapped] {his} head and [thought hard|read the clue again]."),
        ("Clue by clue, {Name} [followed|tracked] the trail [across|around] the {place}.",),
    ), happy=(
        ("At last, {Name} found the {color} {obj} {spot}.", "{He} [cheered|laughed] and hugged {Friend}."),
        ("{Name} solved the last clue and found the {obj}, full of joy.",),
    ), sad=(
        ("But the last clue had blown away, and the {obj} was never found.", "{Name} and {Friend} went home upset."),
        ("{Name} gave up before the last clue and felt sad.",),
    ), summary=("{Name} followed {Friend}'s clues and found a {color} {obj}.",
                "{Name} followed {Friend}'s clues but never found the {color} {obj}."),
       titles=("The Treasure Hunt", "Clue by Clue", "{Friend}'s Clues")),

    Arc("sick_day", "helper", (
        ("The next morning, {Name} woke up with a [sore throat|runny nose|warm forehead] and had to stay in bed.",),
        ("{He} [hugged|held] {his} {color} {obj} and looked out of the window.",),
        ("{His} {helper} brought [warm soup|honey tea|toast with jam] and [read|told] {him} a story.",),
        ("?", "{Name} [napped|dozed] through the afternoon.", "The hours [crept|dragged] by [slowly|very slowly]."),
    ), happy=(
        ("By evening {he} felt [much better|well again].", "{Name} smiled and thanked {his} {helper}."),
        ("The next morning {Name} was well again and laughed out loud.",),
    ), sad=(
        ("{Name} still felt [poorly|awful] and missed playing outside.",),
        ("{He} had to stay in bed for days and felt [sad|gloomy].",),
    ), summary=("{Name} was ill, and {his} {helper} took care of {him} until {he} felt better.",
                "{Name} was ill and missed a day of play."),
       titles=("A Day in Bed", "{Name} Feels Better", "Get Well, {Name}")),

    Arc("new_home", "helper", (
        ("{Name} and {his} family were moving to a new home near the {place}.",),
        ("{Name} packed {his} {color} {obj} [first|carefully] so it would not get lost.",),
        ("?", "Everything in the new house [smelled|looked] [strange|different].", "{Name} did not know anyone there."),
        ("{His} {helper} said, \"New places take time to feel like home.\"",),
    ), happy=(
        ("Soon a neighbor [waved|said hello], and {Name} smiled back.",),
        ("By the end of the week, the new house felt cozy, and {Name} was happy there.",),
    ), sad=(
        ("{Name} missed {his} old friends.", "{He} cried quietly in {his} new room."),
        ("That night, {Name} felt lonely in the strange house.",),
    ), summary=("{Name} moved to a new home near the {place} and came to like it.",
                "{Name} moved to a new home near the {place} and felt lonely."),
       titles=("The New House", "{Name} Moves Away", "A New Home")),

    Arc("stargazing", "friend", (
        ("After dark, {Name} and {his} friend {Friend} lay on a [rug|mat] with {Name}'s {color} {obj} beside them.",),
        ("They [looked up at|gazed at] the [twinkling|shining|glittering] stars.",),
        ("\"Those stars look like a [saucepan|question mark|wiggly snake],\" said {Friend}.",),
        ("?", "A [shooting|falling] star [zipped|streaked] across the sky.", "Somewhere, a night insect [buzzed|chirped]."),
    ), happy=(
        ("They made a wish together and [giggled|laughed] under the stars.",),
        ("{Name} said it was the best night ever.",),
    ), sad=(
        ("Then clouds covered the stars, and they could not see a thing.", "{Name} went inside feeling sad."),
        ("{Friend} had to go home early, and {Name} sat alone and sighed.",),
    ), summary=("{Name} and {Friend} watched the stars together.",
                "{Name} and {Friend} tried to watch the stars, but it went wrong."),
       titles=("Under the Stars", "A Wish for {Name}", "The Shooting Star")),
)
