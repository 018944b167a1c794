"""How the test bed (version 2) states each fact and asks each question: many wordings per attribute.

A statement template fills {S}/{s} (the subject as it is referred to: "Ilsa Quorne", "the Zorex
Max"; {S} opens the sentence), {v} (the value), {va} (the value as an adjective: "2-year" for "2
years"), {an} ("a" or "an" before the value), and, in a sentence about two entities, {o}/{ov}
(the other entity and its value). Some wordings need a light transformation to answer: the value
as an adjective ("a 2-year warranty"), the relation stated from the other side, the value inside
a longer sentence, a list or a sentence about two entities.

Each template is either "train" (used in the train, validation and test splits) or "held_out"
(used only in test_new_wording, so that split measures reading of sentence forms never seen in
training). The new domain (vehicles and museums) has attributes no training row has, stated and
asked in forms of its own.
"""
from __future__ import annotations

# attribute -> the noun the generic forms use ("The {label} of {s} is {v}."); None: no generic form
LABELS = {
    "region": "region", "population": "population", "river": "river", "elevation": "elevation",
    "profession": "profession", "born_in": "birthplace", "birth_year": "year of birth", "founded": None,
    "hobby": "hobby", "height": "height", "based_in": None, "founded_year": "founding year",
    "founder": "founder", "product": None, "employees": "headcount", "revenue": "annual revenue",
    "category": "category", "maker": "maker", "launch_year": "launch year", "price": "price",
    "colour": "colour", "weight": "weight", "warranty": "warranty",
    "top_speed": "top speed", "fuel": "fuel", "seats": "seating capacity", "range": "range",
    "exhibited_at": None, "opening_hours": "opening hours", "curator": "curator", "city": "city",
    "exhibits": None, "visitors": "yearly attendance", "ticket_price": "ticket price",
}
# attributes whose value reads well after "has a {label} of": the "has" and "compare" forms use only these
MEASURES = {"population", "elevation", "height", "founded_year", "employees", "revenue", "launch_year", "price",
            "weight", "warranty", "top_speed", "seats", "range", "visitors", "ticket_price"}
# forms every labelled attribute can take ("{S} has ..." only a measure); "compare" forms mention a second
# entity of the same type and its value
GENERIC = {
    "train": ["The {label} of {s} is {v}.", "{S} has {a_label} of {v}."],
    "held_out": ["According to the figures that were published in the latest annual overview, the {label} of {s} "
                 "is {v}."],
}
COMPARE = {
    "train": ["{S} has {a_label} of {v}, while {o} has one of {ov}."],
    "held_out": ["Compared with {o}, whose {label} is {ov}, {s} has {a_label} of {v}."],
}
# a list of two facts in one sentence: "{S} at a glance: price, 40 dollars; colour, red."
LIST = {"train": "{S} at a glance: {items}.", "held_out": "Key facts about {s} - {items}."}
LIST_ITEM = {"train": "{label}, {v}", "held_out": "{label}: {v}"}

# (type, attribute) -> {"train": [...], "held_out": [...]}: the specific forms of each attribute
STATE = {
    ("town", "region"): {"train": ["{S} is in the region of {v}.", "{S} belongs to the {v} region.",
                                   "{S} is a town in {v}."],
                         "held_out": ["Travellers reach {s} in the heart of {v}.", "{v} is the region that {s} is part of."]},
    ("town", "population"): {"train": ["{S} has a population of {v}.", "{S} is home to {v} people.",
                                       "About {v} inhabitants live in {s}."],
                             "held_out": ["The last census counted {v} residents in {s}.", "{S}, a town of {v} souls, is quiet."]},
    ("town", "river"): {"train": ["{S} lies on the river {v}.", "The river {v} flows through {s}.",
                                  "{S} was built on the banks of the {v}."],
                        "held_out": ["Boats on the {v} stop at {s}.", "{S} is a river town on the {v}."]},
    ("town", "elevation"): {"train": ["{S} lies at an elevation of {v}.", "{S} sits {v} above sea level.",
                                      "{S} is located {v} above the sea."],
                            "held_out": ["At {v} above sea level, {s} has cold winters.", "{S} is a {va}-high town."]},
    ("person", "profession"): {"train": ["{S} works as {an} {v}.", "{S} is {an} {v} by profession.",
                                         "{S} earns a living as {an} {v}."],
                               "held_out": ["{S}, {an} {v} by training, lives alone.", "By trade, {s} is {an} {v}."]},
    ("person", "born_in"): {"train": ["{S} was born in {v}.", "{S} is a native of {v}.", "{v} is the birthplace of {s}."],
                            "held_out": ["{S} grew up in {v}, the town of their birth.", "{S} came into the world in {v}."]},
    ("person", "birth_year"): {"train": ["{S} was born in the year {v}.", "{S} was born in {v}.",
                                         "The year {v} saw the birth of {s}."],
                               "held_out": ["Since their birth in {v}, {s} has moved often.", "{S} dates from {v}."]},
    ("person", "founded"): {"train": ["{S} founded {v}.", "{S} set up {v}.", "{v} was founded by {s}."],
                            "held_out": ["{S} is the person behind the founding of {v}.", "{S} started a firm called {v}.",
                                         "It was {s} who created {v}."]},
    ("person", "hobby"): {"train": ["The hobby of {s} is {v}.", "In their free time, {s} enjoys {v}.",
                                    "{S} spends weekends on {v}."],
                          "held_out": ["{S} is passionate about {v}.", "{v} is what {s} does for fun."]},
    ("person", "height"): {"train": ["{S} is {v} tall.", "{S} stands {v} tall.", "{S} measures {v} in height."],
                           "held_out": ["{S} is a {va}-tall person.", "At {v}, {s} is easy to spot in a crowd."]},
    ("company", "based_in"): {"train": ["{S} is based in {v}.", "{S} has its headquarters in {v}.",
                                        "The head office of {s} is in {v}."],
                              "held_out": ["{S} runs its business from {v}.", "{v} is where {s} has its main office.",
                                           "From its offices in {v}, {s} serves its customers."]},
    ("company", "founded_year"): {"train": ["{S} was founded in the year {v}.", "{S} was established in {v}.",
                                            "{S} has existed since {v}."],
                                  "held_out": ["{S} opened its doors in {v}.", "{S} dates back to {v}."]},
    ("company", "founder"): {"train": ["The founder of {s} is {v}.", "{S} was founded by {v}.", "{v} founded {s}."],
                             "held_out": ["{S} owes its existence to {v}.", "{S} was the idea of {v}."]},
    ("company", "product"): {"train": ["{S} makes the {v}.", "{S} manufactures the {v}.", "The {v} is made by {s}."],
                             "held_out": ["{S} is the company behind the {v}.", "{S} builds a single product, the {v}.",
                                          "The only product of {s} is the {v}."]},
    ("company", "employees"): {"train": ["{S} has {v} employees.", "{S} employs {v} people.",
                                         "{v} people work for {s}."],
                               "held_out": ["{S} has a staff of {v}.", "{S} pays the wages of {v} workers."]},
    ("company", "revenue"): {"train": ["The annual revenue of {s} is {v}.", "{S} earns {v} a year.",
                                       "Every year {s} takes in {v}."],
                             "held_out": ["{S} reports yearly sales of {v}.", "{S} turns over {v} annually."]},
    ("product", "category"): {"train": ["{S} is {an} {v}.", "{S} is sold as {an} {v}.", "{S} is a kind of {v}."],
                              "held_out": ["{S}, {an} {v}, sells well.", "Shops list {s} among their {v}s."]},
    ("product", "maker"): {"train": ["{S} is made by {v}.", "{S} is manufactured by {v}.", "{v} makes {s}."],
                           "held_out": ["{S} comes from the factories of {v}.", "{v} is the company behind {s}."]},
    ("product", "launch_year"): {"train": ["{S} was launched in the year {v}.", "{S} came out in {v}.",
                                           "{S} first went on sale in {v}."],
                                 "held_out": ["{S} reached the shops in {v}.", "{S} has been sold since {v}."]},
    ("product", "price"): {"train": ["{S} costs {v}.", "{S} sells for {v}.", "{S} has a price tag of {v}."],
                           "held_out": ["{S} retails at {v}.", "Buyers pay {v} for {s}."]},
    ("product", "colour"): {"train": ["The colour of {s} is {v}.", "{S} comes in {v}.", "{S} is painted {v}."],
                            "held_out": ["{S} has a {v} finish.", "Every unit of {s} leaves the factory in {v}."]},
    ("product", "weight"): {"train": ["{S} weighs {v}.", "{S} has a weight of {v}.", "{S} tips the scales at {v}."],
                            "held_out": ["{S} is a {va} device.", "Lifting {s} means lifting {v}."]},
    ("product", "warranty"): {"train": ["The warranty of {s} lasts {v}.", "{S} comes with a {va} warranty.",
                                        "{S} is covered by a warranty of {v}."],
                              "held_out": ["Buyers of {s} get {v} of warranty.", "{S} is guaranteed for {v}."]},
    # the new domain: vehicles exhibited in museums
    ("vehicle", "top_speed"): {"train": ["{S} reaches a top speed of {v}.", "{S} can go as fast as {v}."],
                               "held_out": ["{S} tops out at {v}."]},
    ("vehicle", "fuel"): {"train": ["{S} runs on {v}.", "{S} is powered by {v}."],
                          "held_out": ["{S} uses {v} as its fuel."]},
    ("vehicle", "seats"): {"train": ["{S} has {v}.", "{S} offers {v} for passengers."],
                           "held_out": ["{S} is a {va} vehicle."]},
    ("vehicle", "range"): {"train": ["{S} can travel {v} on a full tank.", "{S} covers {v} before refuelling."],
                           "held_out": ["{S} has a range of {v}."]},
    ("vehicle", "exhibited_at"): {"train": ["{S} is on display at {v}.", "{S} is exhibited at {v}.",
                                            "Visitors can see {s} at {v}."],
                                  "held_out": ["{V} has {s} in its collection.", "{S} belongs to the collection of {v}.",
                                               "{S} can be seen in the halls of {v}."]},
    ("museum", "opening_hours"): {"train": ["{S} is open from {v}.", "{S} welcomes visitors from {v}."],
                                  "held_out": ["The doors of {s} are open from {v}."]},
    ("museum", "curator"): {"train": ["The curator of {s} is {v}.", "{S} is run by its curator, {v}."],
                            "held_out": ["{v} curates the collection of {s}."]},
    ("museum", "city"): {"train": ["{S} stands in the city of {v}.", "{S} is located in {v}."],
                         "held_out": ["{v} is the city that hosts {s}."]},
    ("museum", "exhibits"): {"train": ["{S} exhibits {v}.", "{S} has {v} on display.", "{v} is on show at {s}."],
                             "held_out": ["The collection of {s} includes {v}.", "{S} keeps {v} in its main hall.",
                                          "Among the pieces of {s} is {v}."]},
    ("museum", "visitors"): {"train": ["{S} receives {v} visitors a year.", "Every year {v} people visit {s}."],
                             "held_out": ["{S} counts {v} visitors annually."]},
    ("museum", "ticket_price"): {"train": ["A ticket to {s} costs {v}.", "Entry to {s} costs {v}."],
                                 "held_out": ["{S} charges {v} for admission."]},
}
INTRO = {"town": "{S} is a town.", "person": "{S} is a person.", "company": "{S} is a company.",
         "product": "{S} is a product.", "vehicle": "{S} is a vehicle.", "museum": "{S} is a museum."}

# (type, attribute) -> questions; {s} is the subject or a bridge phrase ("the founder of Veltrona Labs")
ASK = {
    ("town", "region"): {"train": ["In which region is {s}?", "Which region does {s} belong to?"],
                         "held_out": ["{S} is part of what region?"]},
    ("town", "population"): {"train": ["What is the population of {s}?", "How many people live in {s}?"],
                             "held_out": ["How many inhabitants does {s} have?"]},
    ("town", "river"): {"train": ["On which river does {s} lie?", "Which river flows through {s}?"],
                        "held_out": ["{S} is on what river?"]},
    ("town", "elevation"): {"train": ["At what elevation does {s} lie?", "How high above sea level is {s}?"],
                            "held_out": ["What altitude is {s} at?"]},
    ("person", "profession"): {"train": ["What is the profession of {s}?", "What does {s} do for a living?"],
                               "held_out": ["What job does {s} have?"]},
    ("person", "born_in"): {"train": ["In which town was {s} born?", "Where was {s} born?"],
                            "held_out": ["What is the home town of {s}?"]},
    ("person", "birth_year"): {"train": ["In which year was {s} born?", "When was {s} born?"],
                               "held_out": ["What year is the birth year of {s}?"]},
    ("person", "founded"): {"train": ["Which company did {s} found?", "What company was founded by {s}?"],
                            "held_out": ["Name the company that {s} started."]},
    ("person", "hobby"): {"train": ["What is the hobby of {s}?", "What does {s} do in free time?"],
                          "held_out": ["Which pastime does {s} enjoy?"]},
    ("person", "height"): {"train": ["How tall is {s}?", "What is the height of {s}?"],
                           "held_out": ["How much does {s} measure in height?"]},
    ("company", "based_in"): {"train": ["In which town is {s} based?", "Where is {s} headquartered?"],
                              "held_out": ["Which town is home to {s}?"]},
    ("company", "founded_year"): {"train": ["In which year was {s} founded?", "When was {s} established?"],
                                  "held_out": ["Since what year has {s} existed?"]},
    ("company", "founder"): {"train": ["Who founded {s}?", "Who is the founder of {s}?"],
                             "held_out": ["Which person started {s}?"]},
    ("company", "product"): {"train": ["Which product does {s} make?", "What does {s} manufacture?"],
                             "held_out": ["Name the product built by {s}."]},
    ("company", "employees"): {"train": ["How many employees does {s} have?", "How many people work for {s}?"],
                               "held_out": ["What is the size of the staff of {s}?"]},
    ("company", "revenue"): {"train": ["What is the annual revenue of {s}?", "How much does {s} earn a year?"],
                             "held_out": ["What are the yearly sales of {s}?"]},
    ("product", "category"): {"train": ["What kind of product is {s}?", "What type of item is {s}?"],
                              "held_out": ["{S} is what sort of product?"]},
    ("product", "maker"): {"train": ["Which company makes {s}?", "Who manufactures {s}?"],
                           "held_out": ["Which firm produces {s}?"]},
    ("product", "launch_year"): {"train": ["In which year was {s} launched?", "When did {s} come out?"],
                                 "held_out": ["What year did {s} reach the shops?"]},
    ("product", "price"): {"train": ["How much does {s} cost?", "What is the price of {s}?"],
                           "held_out": ["What do buyers pay for {s}?"]},
    ("product", "colour"): {"train": ["What colour is {s}?", "In which colour does {s} come?"],
                            "held_out": ["What is the colour of {s}?"]},
    ("product", "weight"): {"train": ["How much does {s} weigh?", "What is the weight of {s}?"],
                            "held_out": ["How heavy is {s}?"]},
    ("product", "warranty"): {"train": ["How long is the warranty of {s}?", "How long does the warranty of {s} last?"],
                              "held_out": ["For how long is {s} guaranteed?"]},
    ("vehicle", "top_speed"): {"train": ["What is the top speed of {s}?", "How fast can {s} go?"], "held_out": []},
    ("vehicle", "fuel"): {"train": ["What fuel does {s} run on?", "What powers {s}?"], "held_out": []},
    ("vehicle", "seats"): {"train": ["How many seats does {s} have?", "How many passengers can {s} seat?"],
                           "held_out": []},
    ("vehicle", "range"): {"train": ["What is the range of {s}?", "How far can {s} travel on a full tank?"],
                           "held_out": []},
    ("vehicle", "exhibited_at"): {"train": ["Where is {s} exhibited?", "Which museum displays {s}?"], "held_out": []},
    ("museum", "opening_hours"): {"train": ["What are the opening hours of {s}?", "When is {s} open?"],
                                  "held_out": []},
    ("museum", "curator"): {"train": ["Who is the curator of {s}?", "Who runs {s}?"], "held_out": []},
    ("museum", "city"): {"train": ["In which city is {s}?", "Where is {s} located?"], "held_out": []},
    ("museum", "exhibits"): {"train": ["Which vehicle does {s} exhibit?", "What vehicle is on display at {s}?"],
                             "held_out": []},
    ("museum", "visitors"): {"train": ["How many visitors does {s} receive a year?",
                                       "How many people visit {s} every year?"], "held_out": []},
    ("museum", "ticket_price"): {"train": ["How much is a ticket to {s}?", "What does entry to {s} cost?"],
                                 "held_out": []},
}
# relation -> the phrases that name the bridge in a two-hop question ("the founder of {s}")
BRIDGE = {
    ("company", "founder"): {"train": ["the founder of {s}", "the person who founded {s}"],
                             "held_out": ["the entrepreneur behind {s}"]},
    ("company", "product"): {"train": ["the product made by {s}", "the product that {s} makes"],
                             "held_out": ["the item {s} manufactures"]},
    ("product", "maker"): {"train": ["the maker of {s}", "the company that makes {s}"],
                           "held_out": ["the firm behind {s}"]},
    ("person", "founded"): {"train": ["the company founded by {s}", "the company that {s} founded"],
                            "held_out": ["the firm {s} started"]},
    ("vehicle", "exhibited_at"): {"train": ["the museum that exhibits {s}", "the museum where {s} is on display"],
                                  "held_out": []},
    ("museum", "exhibits"): {"train": ["the vehicle exhibited at {s}", "the vehicle on display at {s}"],
                             "held_out": []},
}
