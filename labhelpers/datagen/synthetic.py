"""Seeded generator of synthetic dialogues with reference summaries, in DialogSum's format.

The hand-written dialogues shipped with the labs are too few (~240) to fine-tune on or to
stress a tiny model, so this module writes as many more as needed: everyday, shopping,
travel, work, school, health and service conversations built from paraphrased turn
templates, many slots (names from many cultures, days, times, prices, places, items),
optional small talk and several outcomes per scenario. Each record looks like DialogSum's:

    {"id": "syn-00000", "dialogue": "#Person1#: ...\\n#Person2#: ...",
     "summary": "#Person1# books ...", "topic": "restaurant booking"}

Every fact in a summary comes from the same slot values used in the dialogue, so summaries
are faithful by construction. Only the standard library is used, and all randomness comes
from a ``random.Random`` per dialogue, derived from ``(seed, index)``: output is identical
across runs and platforms, and growing ``n`` only appends dialogues.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

__all__ = ["SCENARIOS", "generate_dialogues"]

# --------------------------------------------------------------------------------------
# Slot vocabularies
# --------------------------------------------------------------------------------------

_FIRST_NAMES = (
    "Aisha", "Kenji", "Priya", "Mateo", "Olga", "Chidi", "Mei", "Santiago", "Fatima",
    "Lars", "Amara", "Hiroshi", "Nadia", "Tomasz", "Leila", "Kwame", "Ingrid", "Ravi",
    "Sofia", "Dmitri", "Yuki", "Omar", "Zanele", "Liam", "Ana", "Jin", "Elif", "Marcus",
    "Noor", "Pablo", "Siobhan", "Arjun", "Hana", "Tariq", "Emeka", "Camille", "Wei",
    "Bongani", "Freya", "Diego", "Malia", "Kofi", "Anya", "Rahul", "Lucía", "Sven",
    "Thandiwe", "Ahmed", "Grace", "Linh", "Isabel", "Kai", "Zara", "Oluwaseun", "Niamh",
    "Ji-woo", "Rosa", "Yusuf", "Esther", "Mateus", "Ayesha", "Tomás", "Keanu", "Ilse",
)
_SURNAMES = (
    "Okafor", "Tanaka", "Sharma", "García", "Kowalski", "Nguyen", "Haddad", "Mensah",
    "Johansson", "Rossi", "Kim", "Petrov", "Silva", "O'Brien", "Chen", "Abebe", "Novak",
    "Yilmaz", "Patel", "Müller", "Dubois", "Santos", "Ito", "Dlamini", "Larsen", "Hassan",
    "Murphy", "Park", "Fernández", "Kaur", "Adeyemi", "Schmidt", "Lindqvist", "Rahman",
    "Moreau", "Wong", "Costa", "Ivanova", "Osei", "Nakamura", "Begum", "Walker", "Kealoha",
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_WEEKDAYS = _DAYS[:5]
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)
_NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve",
)
_STREETS = (
    "Elm Street", "Harbour Road", "King Street", "Station Road", "Mill Lane",
    "Victoria Avenue", "Church Street", "Park Road", "Market Square", "Rosewood Lane",
)
_CITIES = (
    "Manchester", "Lyon", "Osaka", "Edinburgh", "Porto", "Kraków", "Bristol", "Utrecht",
    "Mombasa", "Pune", "Gothenburg", "Seville", "Bologna", "Leeds", "Nagoya", "Accra",
)


def _ordinal(k: int) -> str:
    """1 -> '1st', 22 -> '22nd', 13 -> '13th'."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _clock(hour: int, minute: int = 0) -> str:
    """24-hour (hour, minute) -> '7 pm', '9:15 am'."""
    half = "am" if hour < 12 else "pm"
    h = hour % 12 or 12
    return f"{h} {half}" if minute == 0 else f"{h}:{minute:02d} {half}"


def _time_between(rng: random.Random, first: int, last: int, step: int = 15) -> str:
    """A clock time between hours first and last (inclusive), on a step-minute grid."""
    slots = [(h, m) for h in range(first, last + 1) for m in range(0, 60, step)]
    return _clock(*rng.choice(slots))


# --------------------------------------------------------------------------------------
# Dialogue builder
# --------------------------------------------------------------------------------------

_T = TypeVar("_T")
_PAUSE = None  # marker in a turn list: small talk may be inserted here
_MAX_TURNS = 14


class _Builder:
    """Collects (role, text) turns for one dialogue; roles are letters, renumbered later."""

    __slots__ = ("rng", "slots", "turns", "_used")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.slots: dict[str, str] = {"cur": rng.choice(("$", "$", "£", "€"))}
        self.turns: list[tuple[str, str] | None] = []
        self._used: set[str] = set()

    def say(self, role: str, options: Iterable[str]) -> None:
        """Append one turn for role, picking one paraphrase and filling the slots."""
        self.turns.append((role, self.rng.choice(tuple(options)).format_map(self.slots)))

    def pause(self) -> None:
        """Mark a point between two exchanges where a small-talk aside would be natural."""
        self.turns.append(_PAUSE)

    def fmt(self, text: str) -> str:
        """Fill slots in text (used for the summary)."""
        return text.format_map(self.slots)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, seq: Sequence[_T]) -> _T:
        return self.rng.choice(seq)

    def _fresh(self, pool: tuple[str, ...]) -> str:
        while True:
            name = self.rng.choice(pool)
            if name not in self._used:
                self._used.add(name)
                return name

    def first(self) -> str:
        return self._fresh(_FIRST_NAMES)

    def surname(self) -> str:
        return self._fresh(_SURNAMES)

    def price(self, lo: int, hi: int, cents: bool = False) -> str:
        value = self.rng.randint(lo, hi)
        cur = self.slots["cur"]
        if cents:
            return f"{cur}{value:,}.{self.rng.choice(('99', '50', '95', '49'))}"
        return f"{cur}{value:,}"

    def phone(self) -> str:
        return f"555-0{self.rng.randint(100, 199)}"

    def date(self) -> str:
        return f"the {_ordinal(self.rng.randint(1, 28))} of {self.rng.choice(_MONTHS)}"


# --------------------------------------------------------------------------------------
# Scenario templates. Each fills a _Builder and returns the summary, with roles written
# as <X>; they become #PersonN# in order of first appearance.
# --------------------------------------------------------------------------------------

_RESTAURANTS = (
    "Luigi's", "Golden Lotus", "Casa Mariana", "Sakura House", "Blue Olive",
    "Maison Claire", "Spice Route", "Copper Pot", "Little Saigon", "Tandoor Palace",
    "El Faro", "Nordic Table",
)
_PARTY = ("two", "three", "four", "five", "six", "eight")
_TABLE_REQUESTS = (
    ("Oh, and could we have a table by the window?", "asks for a table by the window"),
    ("One more thing: could we sit outside if the weather's nice?", "asks to sit outside"),
    ("Also, it's my mother's birthday. Could you bring out a small cake at the end?",
     "asks for a birthday cake for <C>'s mother"),
    ("By the way, one of us is vegan. Is that a problem?", "mentions that one guest is vegan"),
)


def _restaurant_booking(d: _Builder) -> str:
    s = d.slots
    time, alt = d.rng.sample([_clock(h, m) for h in (18, 19, 20) for m in (0, 30)], 2)
    s.update(rest=d.pick(_RESTAURANTS), party=d.pick(_PARTY), day=d.pick(_DAYS),
             time=time, alt=alt, surname=d.surname(), phone=d.phone(), host=d.first())
    outcome = d.rng.choices(("booked", "alternative", "declined"), (5, 3, 2))[0]
    d.say("S", ("Good evening, {rest}. How can I help you?",
                "Thank you for calling {rest}, this is {host} speaking.",
                "Hello, {rest}. What can I do for you?"))
    if d.chance(0.4):
        d.say("C", ("Hi, could I book a table for {party} on {day} at {time}?",
                    "Hello! I'd like to reserve a table for {party} people this {day}, "
                    "around {time} if you can.",
                    "Hi there. Have you got a table for {party} on {day} evening, at {time}?"))
    else:
        d.say("C", ("Hi, I'd like to book a table for {party} on {day}, please.",
                    "Hello. Do you have a table for {party} on {day} evening?",
                    "Hi there. I was hoping to reserve a table for {party} people this {day}."))
        d.say("S", ("Certainly. What time were you thinking of?",
                    "Let me have a look. For what time?",
                    "Of course. And what time would suit you?"))
        d.say("C", ("Around {time}, if possible.", "Would {time} work?",
                    "We were hoping for {time}."))
    if outcome == "declined":
        d.say("S", ("I'm sorry, we're fully booked at {time}. The only thing I have is {alt}.",
                    "{time} is taken, I'm afraid. The earliest I could offer is {alt}.",
                    "Ah, that's our busiest time and we're full. Would {alt} be any good?"))
        d.say("C", ("That doesn't really work for us, unfortunately. We'll try somewhere else.",
                    "Hmm, no, that won't work with the kids. Thanks anyway.",
                    "That's a shame. I think we'll leave it this time."))
        if d.chance(0.6):
            d.say("S", ("I understand. Maybe another time!",
                        "Sorry we couldn't help. Have a good evening.",
                        "No problem. Do try us again soon."))
        return ("<C> tries to book a table for {party} at {rest} on {day} at {time}, but it "
                "is fully booked. <C> turns down the {alt} table <S> offers.")
    if outcome == "alternative":
        d.say("S", ("I'm sorry, we're fully booked at {time}. I could offer you {alt} instead.",
                    "{time} is taken, I'm afraid, but we have a table at {alt}.",
                    "We're full at {time}. Would {alt} suit you instead?"))
        d.say("C", ("{alt} works for us. Let's do that.", "Hmm, {alt}... yes, that should be fine.",
                    "OK, {alt} it is."))
        s["booked"] = s["alt"]
    else:
        d.say("S", ("{time} is fine.", "Yes, we can do {time}.", "Let me check... yes, {time} is free."))
        s["booked"] = s["time"]
    d.pause()
    d.say("S", ("Could I have a name for the booking?", "What name should I put it under?",
                "And what name is the booking under?"))
    d.say("C", ("It's {surname}.", "{surname}, please.", "Under {surname}. That's my surname."))
    extra = ""
    if d.chance(0.5):
        d.say("S", ("And a contact number, in case anything changes?",
                    "Could I also take a phone number?"))
        d.say("C", ("Sure, it's {phone}.", "Yes, it's {phone}."))
        extra = " <S> also takes <C>'s phone number."
    if d.chance(0.4):
        line, summ = d.pick(_TABLE_REQUESTS)
        d.say("C", (line,))
        d.say("S", ("No problem, I'll make a note of that.", "Not at all. I've added it to the booking."))
        extra = f" <C> also {summ}."
    if d.chance(0.7):
        d.say("S", ("Perfect, that's {party} people on {day} at {booked}. See you then!",
                    "All done. We look forward to seeing you on {day}.",
                    "You're all booked in. Enjoy your evening!"))
        d.say("C", ("Thanks very much. Bye!", "Great, thank you!", "Brilliant, see you then."))
    if outcome == "alternative":
        return ("<C> wants a table for {party} at {rest} on {day} at {time}, but it is fully "
                "booked, so <C> books {alt} instead under the name {surname}." + extra)
    return "<C> books a table for {party} at {rest} on {day} at {time} under the name {surname}." + extra


# (phrase, demonstrative, pronoun, [(reason line, reason summary, faulty)], exchange)
_RETURN_ITEMS = (
    ("a blue rain jacket", "this jacket", "it",
     (("It's too small across the shoulders.", "it is too small", False),
      ("The zip broke the first time I wore it.", "the zip broke the first time <C> wore it", True)),
     "a larger size"),
    ("a pair of running shoes", "these shoes", "them",
     (("They hurt my feet after ten minutes.", "they hurt <C>'s feet", False),
      ("The sole is already coming off one of them.", "a sole is coming off", True)),
     "a half size bigger"),
    ("a coffee maker", "this coffee maker", "it",
     (("It leaks all over the counter.", "it leaks", True),
      ("It stopped heating after two days.", "it stopped heating after two days", True)),
     "a new one"),
    ("a wool jumper", "this jumper", "it",
     (("It shrank after one wash, even on the cold setting.", "it shrank after one wash", True),
      ("The colour is quite different from the picture online.",
       "the colour is different from the picture online", False)),
     "a different colour"),
    ("a pair of wireless headphones", "these headphones", "them",
     (("The left side keeps cutting out.", "the left side keeps cutting out", True),
      ("They won't charge any more.", "they won't charge", True)),
     "a new pair"),
    ("a desk lamp", "this lamp", "it",
     (("It flickers whenever I switch it on.", "it flickers", True),
      ("It's much too bright for my bedroom.", "it is too bright", False)),
     "a dimmer model"),
    ("a backpack", "this backpack", "it",
     (("One of the straps is already tearing.", "a strap is tearing", True),
      ("It's just too small for my laptop.", "it is too small for <C>'s laptop", False)),
     "a bigger one"),
    ("an electric kettle", "this kettle", "it",
     (("It switches itself off before the water boils.",
       "it switches off before the water boils", True),
      ("The lid won't stay closed.", "the lid won't stay closed", True)),
     "a new one"),
)


def _item_return(d: _Builder) -> str:
    s = d.slots
    item, dem, pron, reasons, exch = d.pick(_RETURN_ITEMS)
    outcome = d.rng.choices(("refund", "exchange", "credit", "declined"), (4, 3, 2, 2))[0]
    reason, reason_s, faulty = d.pick(reasons)
    when = "about two months ago" if outcome == "declined" else f"last {d.pick(_DAYS)}"
    s.update(item=item, dem=dem, pron=pron, exch=exch, reason=reason, reason_s=reason_s,
             when=when, price=d.price(15, 120, cents=d.chance(0.6)))
    complaint = ("Hi, I bought {item} here {when} and I'd like to return {pron}. {reason}",
                 "I'd like to bring back {dem}, please. I bought {pron} {when}. {reason}",
                 "Yes, I'm afraid I need to return {dem}. {reason} I got {pron} here {when}.")
    if d.chance(0.5):
        d.say("S", ("Hi there, can I help you?", "Good morning. What can I do for you?",
                    "Next, please! How can I help?"))
        d.say("C", complaint)
    else:
        d.say("C", ("Excuse me, I bought {item} here {when} and I'd like to return {pron}. {reason}",
                    "Hello. I'd like to bring back {dem}, please. I bought {pron} {when}. {reason}",
                    "Hi, I need to return {dem}, I'm afraid. I got {pron} here {when}. {reason}"))
    d.say("S", ("Oh, I'm sorry about that. Do you have your receipt?",
                "Sorry to hear that. Have you got the receipt with you?",
                "I see. Could I see the receipt, please?"))
    if outcome == "credit":
        d.say("C", ("Oh no, I think I threw it away.", "I'm afraid I don't have it any more.",
                    "Hmm, no. I didn't think I'd need it."))
        d.say("S", ("Without a receipt I can't give you a refund, but I can offer you store "
                    "credit of {price}.",
                    "Then I can't refund you, sorry. What I can do is give you {price} in store credit."))
        d.say("C", ("OK, that's better than nothing.", "Fine, I'm sure I'll find something else here.",
                    "All right, store credit is fine."))
        if d.chance(0.5):
            d.say("S", ("Here's your credit slip. It's valid for a year.",
                        "There you go. Just show this card at the till next time."))
        return ("<C> wants to return {item} because {reason_s} but has no receipt, so <S> "
                "gives <C> store credit of {price}.")
    d.say("C", ("Yes, here you are.", "Yes, it's here somewhere... here it is.", "Sure, here."))
    if outcome == "declined":
        d.say("S", ("Hmm, this was bought about two months ago. I'm afraid our return period is "
                    "only 30 days.",
                    "I'm sorry, but that's about two months ago, and we only take returns within 30 days."))
        d.say("C", ("Is there really nothing you can do?", "Oh no. I didn't realise it had been that long.",
                    "Really? That's disappointing."))
        if faulty:
            d.say("S", ("I'm sorry. It's still under the manufacturer's warranty, though, so they "
                        "should repair or replace {pron}.",
                        "I understand. You could contact the manufacturer; the warranty covers "
                        "faults for a year."))
            tail = " <S> suggests contacting the manufacturer under the warranty."
        else:
            d.say("S", ("I'm sorry, I'm not allowed to make exceptions. You could try selling "
                        "{pron} online, though.",
                        "I'm afraid not. Maybe you could sell {pron} online?"))
            tail = " <S> suggests selling {pron} online instead."
        if d.chance(0.5):
            d.say("C", ("All right, I'll try that then.", "Fine. Thanks anyway."))
        return ("<C> wants to return {item} bought about two months ago because {reason_s}, but "
                "<S> refuses because the 30-day return period is over." + tail)
    d.pause()
    d.say("S", ("Thanks. Would you like a refund or an exchange?",
                "Great. Do you want your money back, or would you prefer an exchange?",
                "That's fine. Refund or exchange?"))
    if outcome == "exchange":
        d.say("C", ("Could I exchange {pron} for {exch} instead?", "Actually, I'd like {exch}, please.",
                    "An exchange, please. Do you have {exch}?"))
        d.say("S", ("Of course. Give me a minute and I'll get {exch} for you.",
                    "Let me check... yes, we have {exch} in stock. Here you go."))
        if d.chance(0.5):
            d.say("C", ("Perfect, thanks for your help.", "Great, thank you so much."))
        return "<C> brings back {item} bought {when} because {reason_s}. <S> exchanges {pron} for {exch}."
    d.say("C", ("A refund, please.", "I'd rather have my money back, to be honest.",
                "A refund, please. I paid by card."))
    d.say("S", ("No problem. I've put {price} back on your card; it can take a few days to appear.",
                "All right, that's {price} refunded to your card.",
                "Done. {price} will go back onto your card within five working days."))
    if d.chance(0.5):
        d.say("C", ("Thanks for sorting that out so quickly.", "Great, thank you."))
        d.say("S", ("You're welcome. Have a nice day!", "No problem at all. Bye now."))
    return "<C> returns {item} bought {when} because {reason_s}. <S> refunds {price} to <C>'s card."


_CLINICS = ("Parkside Medical Centre", "Riverside Surgery", "Hillview Clinic",
            "Oakwood Health Centre", "Harbour Family Practice")
_SYMPTOMS = ("a sore throat", "back pain", "a rash on my arm", "bad headaches",
             "a cough that won't go away", "trouble sleeping", "a painful knee", "earache")
_DURATIONS = ("a week", "a few days", "two weeks", "almost a month", "since Sunday")


def _doctor_appointment(d: _Builder) -> str:
    s = d.slots
    day, day2 = d.rng.sample(_WEEKDAYS, 2)
    symptom = d.pick(_SYMPTOMS)
    s.update(clinic=d.pick(_CLINICS), rname=d.first(), doc=d.surname(), doc2=d.surname(),
             full=f"{d.first()} {d.surname()}", dob=f"{d.date()}, {d.rng.randint(1950, 2004)}",
             day=day, day2=day2, time=_time_between(d.rng, 8, 16, 10), street=d.pick(_STREETS),
             symptom=symptom, symptom_s=symptom.replace("my ", "<C>'s "), dur=d.pick(_DURATIONS))
    outcome = d.rng.choices(("booked", "other_doctor", "walk_in"), (5, 3, 2))[0]
    d.say("S", ("Good morning, {clinic}. How can I help?",
                "{clinic}, you're speaking to {rname}. How can I help you?",
                "Hello, {clinic} reception."))
    if d.chance(0.5):
        d.say("C", ("Hello, I'd like to see Dr {doc} about {symptom}, please.",
                    "Hi. Is it possible to see Dr {doc} this week? I've had {symptom} for {dur}.",
                    "Hello, I need an appointment with Dr {doc}. I've got {symptom}."))
    else:
        d.say("C", ("Hello, I'd like to make an appointment with Dr {doc}, please.",
                    "Hi, could I book an appointment with Dr {doc}?"))
        d.say("S", ("Of course. What seems to be the problem?", "Sure. What's it about?"))
        d.say("C", ("I've had {symptom} for {dur}.", "It's {symptom}. It's been going on for {dur}."))
    if d.chance(0.6):
        d.say("S", ("Can I have your name and date of birth?",
                    "Could I take your full name and date of birth, please?"))
        d.say("C", ("Yes, it's {full}, born {dob}.", "{full}. My date of birth is {dob}."))
    d.pause()
    if outcome == "walk_in":
        d.say("S", ("I'm afraid the first appointment I have with Dr {doc} is next {day2}.",
                    "Dr {doc} is fully booked until next {day2}, I'm sorry."))
        d.say("C", ("That's quite far away. It's getting worse.",
                    "I don't think I can wait that long.", "Next {day2}? Is there nothing sooner?"))
        d.say("S", ("In that case, I'd suggest the walk-in clinic on {street}. It's open until "
                    "8 pm and you don't need an appointment.",
                    "Then please go to the walk-in clinic on {street}. They see people without "
                    "an appointment until 8 pm."))
        if d.chance(0.6):
            d.say("C", ("OK, I'll go there this afternoon. Thanks.", "Right, I'll do that. Thank you."))
        return ("<C> wants to see Dr {doc} about {symptom_s}, but the first free appointment is "
                "next {day2}, so <S> suggests the walk-in clinic on {street}.")
    if outcome == "other_doctor":
        d.say("S", ("I'm afraid Dr {doc} is on holiday until next week. Dr {doc2} could see you on "
                    "{day} at {time}, though.",
                    "Dr {doc} is away at the moment, but Dr {doc2} has a slot on {day} at {time}."))
        d.say("C", ("That's fine, I don't mind who I see.", "OK, Dr {doc2} is fine.",
                    "{day} at {time} with Dr {doc2}? Yes, please."))
        result = ("Dr {doc} is away, so <C> books an appointment with Dr {doc2} on {day} at "
                  "{time} about {symptom_s}.")
    else:
        d.say("S", ("Thank you. Dr {doc} has a free slot on {day} at {time}. Would that suit you?",
                    "Let me check... Dr {doc} can see you on {day} at {time}.",
                    "The next available slot with Dr {doc} is {day} at {time}."))
        d.say("C", ("Yes, that's perfect.", "{day} at {time} is fine, thank you.",
                    "Great, I'll take it."))
        result = ("<C> calls {clinic} and books an appointment with Dr {doc} on {day} at "
                  "{time} about {symptom_s}.")
    if d.chance(0.6):
        d.say("S", ("Lovely, you're booked in. Please arrive ten minutes early.",
                    "Great. Please bring a list of any medicines you're taking."))
        d.say("C", ("Thank you, bye.", "Will do. Thanks!"))
    return result


_TRAIN_EXTRAS = ("I have a student railcard. Does that help?",
                 "I've got a senior railcard, by the way.",
                 "Is there a discount with a young person's railcard? I have one.")


def _train_ticket(d: _Builder) -> str:
    s = d.slots
    h = d.rng.randint(6, 17)
    m = d.pick((0, 5, 15, 20, 30, 40, 45, 50))
    dep, dep2 = f"{h}:{m:02d}", f"{h + 1}:{m:02d}"
    fare = d.rng.randint(40, 140)
    s.update(city=d.pick(_CITIES), ttype=d.pick(("single", "return")), day=d.pick(_DAYS),
             part="morning" if h < 12 else "afternoon", dep=dep, dep2=dep2,
             arr=f"{h + d.rng.randint(2, 4)}:{d.pick((10, 25, 35, 55))}", price=f"{s['cur']}{fare}",
             price2=d.price(18, 39), card_price=f"{s['cur']}{round(fare * 2 / 3)}",
             plat=str(d.rng.randint(1, 14)))
    outcome = d.rng.choices(("bought", "sold_out", "off_peak"), (5, 2, 3))[0]
    if d.chance(0.5):
        d.say("S", ("Next, please!", "Hi there, where are you travelling to?", "Good morning. Where to?"))
    d.say("C", ("Hi, I'd like a {ttype} ticket to {city}, please.",
                "Can I get a {ttype} to {city}, please?",
                "Hello, I need a {ttype} ticket to {city}."))
    d.say("S", ("Sure. When are you travelling?", "For which day and time?",
                "No problem. When would you like to go?"))
    d.say("C", ("This {day}, on the {dep} if possible.", "On {day}. Is there a train at {dep}?",
                "{day} {part}. I was looking at the {dep}."))
    if outcome == "sold_out":
        d.say("S", ("The {dep} is fully booked, I'm afraid. The next one is at {dep2}, and a "
                    "{ttype} is {price}.",
                    "Sorry, there are no seats left on the {dep}. I can do the {dep2} for {price}."))
        d.say("C", ("OK, the {dep2} will have to do.", "That's fine, I'll take the {dep2} then."))
        result = ("<C> wants a {ttype} ticket to {city} for the {dep} train on {day}, but it is full, so "
                  "<C> takes the {dep2} for {price}")
    elif outcome == "off_peak":
        d.say("S", ("There's one at {dep}. A {ttype} is {price}.",
                    "The {dep} gets in at {arr}. That's {price} for a {ttype}."))
        d.say("C", ("Wow, that's more than I expected. Is there anything cheaper?",
                    "{price}? Isn't there a cheaper option?"))
        d.say("S", ("If you can take the {dep2} instead, it's off-peak and only {price2}.",
                    "The {dep2} is off-peak, so the fare is {price2}."))
        d.say("C", ("I'll do that then. The {dep2}, please.", "Great, the {dep2} is fine."))
        result = ("<C> buys a {ttype} ticket to {city} for {day}. <C> finds the {dep} train "
                  "too expensive at {price} and takes the off-peak {dep2} for {price2}")
    else:
        d.say("S", ("There's one at {dep} that gets in at {arr}. A {ttype} is {price}.",
                    "Yes, the {dep}. A {ttype} is {price}."))
        if d.chance(0.4):
            d.say("C", _TRAIN_EXTRAS)
            d.say("S", ("It does! A third off brings it down to {card_price}.", "Great, then it's {card_price}."))
            result = ("<C> buys a {ttype} ticket to {city} for the {dep} train on {day}, which costs "
                      "{card_price} with a railcard")
        else:
            d.say("C", ("That's fine, I'll take it.", "Great, I'll take that one.", "Perfect."))
            result = "<C> buys a {ttype} ticket to {city} for the {dep} train on {day} for {price}"
    d.pause()
    if d.chance(0.7):
        d.say("S", ("Here's your ticket. The train leaves from platform {plat}.",
                    "All done. You'll want platform {plat}.",
                    "There you go. It usually goes from platform {plat}."))
        d.say("C", ("Thanks a lot.", "Thank you!", "Platform {plat}. Got it, thanks."))
        result += ", leaving from platform {plat}"
    return result + "."


_COMPANIES = ("Brightline Logistics", "Nordvik Software", "Green Leaf Cafés", "Atlas Engineering",
              "Harbour Bank", "Sunrise Hotels", "Kestrel Media", "Baobab Foods")
# (position, duty, salary range)
_POSITIONS = (
    ("sales assistant", "looked after customers and ran the till", (22, 28)),
    ("junior developer", "built and tested our mobile app", (38, 50)),
    ("accountant", "prepared the monthly reports", (45, 60)),
    ("marketing coordinator", "planned our social media campaigns", (32, 42)),
    ("warehouse supervisor", "managed a team of twelve people", (30, 38)),
    ("receptionist", "handled bookings and phone calls", (22, 27)),
    ("data analyst", "built dashboards for the sales team", (40, 55)),
)


_INTERVIEW_QA = (
    ("What would you say is your biggest weakness?",
     "I sometimes take on too much, but I've learned to plan my week better."),
    ("How do you handle pressure?", "I try to stay calm, make a list and deal with the most urgent things first."),
    ("Tell me about a mistake you made at work and what you learned.",
     "Once I missed a deadline because I didn't ask for help. Now I speak up early."),
    ("Where do you see yourself in five years?", "Leading a small team, ideally here."),
)


def _job_interview(d: _Builder) -> str:
    s = d.slots
    position, duty, (lo, hi) = d.pick(_POSITIONS)
    s.update(company=d.pick(_COMPANIES), position=position, duty=duty,
             a_position=("an " if position[0] in "aeiou" else "a ") + position,
             years=d.pick(("two", "three", "four", "five", "seven")), prev=d.pick(_COMPANIES),
             cfirst=d.first(), csur=d.surname(), iname=d.first(), day=d.pick(_WEEKDAYS),
             time=_time_between(d.rng, 9, 16, 30), date=d.date(),
             salary=f"{s['cur']}{d.rng.randint(lo, hi)},000")
    while s["prev"] == s["company"]:
        s["prev"] = d.pick(_COMPANIES)
    outcome = d.rng.choices(("second", "wait", "offer"), (4, 4, 2))[0]
    d.say("I", ("Good morning, {cfirst}. Welcome to {company}. Please, have a seat.",
                "Hello, you must be {cfirst} {csur}. I'm {iname}, head of the team here at {company}.",
                "Thanks for coming in to {company} today. Shall we get started?"))
    d.say("C", ("Thank you. I'm happy to be here.", "Thanks for having me.", "Thank you for inviting me."))
    d.say("I", ("So, tell me a bit about your experience.",
                "Could you start by telling me why you applied for the {position} job at {company}?",
                "What makes you a good fit for this {position} role?"))
    d.say("C", ("I've been {a_position} at {prev} for {years} years, where I {duty}.",
                "For the last {years} years I've worked at {prev} as {a_position}. I {duty}, so I "
                "know the job well.",
                "Well, I've spent {years} years at {prev}, where I {duty}. I'm ready for a new challenge."))
    d.pause()
    if d.chance(0.5):
        question, answer = d.pick(_INTERVIEW_QA)
        d.say("I", (question,))
        d.say("C", (answer,))
    asked_salary = d.chance(0.5)
    if asked_salary:
        d.say("C", ("Could I ask what the salary is for this position?",
                    "May I ask about the salary?"))
        d.say("I", ("It starts at {salary} a year, plus a bonus.", "The starting salary is {salary}."))
    first = "<I> interviews <C>, who has worked at {prev} for {years} years, for the {position} job at {company}"
    if outcome == "offer":
        d.say("I", ("To be honest, I've heard enough. We'd like to offer you the job. Could you "
                    "start on {date}?",
                    "I'm impressed. We'd like to offer you the position, starting on {date}."))
        d.say("C", ("That's wonderful! Yes, I can.", "Really? Thank you so much! Yes, {date} is fine."))
        return first + ". <I> offers <C> the job, starting on {date}."
    if outcome == "second":
        d.say("I", ("Well, we'd like to invite you to a second interview on {day} at {time}.",
                    "Thank you. Could you come back for a second interview on {day} at {time}?"))
        d.say("C", ("Yes, of course. I'll be there.", "{day} at {time} is fine. Thank you!"))
        return first + ". <I> invites <C> to a second interview on {day} at {time}."
    d.say("I", ("Thank you, that's all from me. We'll let you know by {day}.",
                "Thanks for your time. You'll hear from us by {day}."))
    d.say("C", ("Thank you. I look forward to hearing from you.", "Great, thanks for your time."))
    if asked_salary:
        return first + ". <C> asks about the salary, which starts at {salary}, and <I> will reply by {day}."
    return first + ". <I> will tell <C> the result by {day}."


_HOTELS = ("Harbour View Hotel", "Grand Palace Hotel", "Hotel Aurora", "Lakeside Inn",
           "Hotel Miramar", "Cedar Lodge")
_FLOORS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


def _hotel_checkin(d: _Builder) -> str:
    s = d.slots
    floor = d.rng.randint(1, 8)
    s.update(hotel=d.pick(_HOTELS), surname=d.surname(), nights=d.pick(_NUMBER_WORDS[2:8]),
             room=f"{floor}{d.rng.randint(1, 40):02d}", floor=_FLOORS[floor - 1],
             b1=_clock(d.pick((6, 7)), d.pick((0, 30))), b2=_clock(d.pick((10, 11))),
             price=d.price(15, 45), ready=_clock(d.pick((13, 14, 15))))
    outcome = d.rng.choices(("normal", "upgrade_yes", "upgrade_no", "not_ready"), (4, 2, 2, 2))[0]
    if d.chance(0.5):
        d.say("S", ("Welcome to {hotel}! Are you checking in?", "Good afternoon, welcome to {hotel}."))
        d.say("C", ("Yes, I have a reservation under {surname}.", "Hi, yes. The booking's under {surname}."))
    else:
        d.say("C", ("Hi, I'm checking in. The name is {surname}.",
                    "Good afternoon. I have a reservation under {surname}."))
        d.say("S", ("Welcome to {hotel}. Let me find that for you.", "Of course. Welcome to {hotel}."))
    d.say("S", ("Here it is: a double room for {nights} nights. Is that right?",
                "I've got you for {nights} nights in a double room."))
    d.say("C", ("That's right.", "Yes, exactly.", "Yes, {nights} nights."))
    if d.chance(0.5):
        d.say("S", ("Could I see your passport and the card you'll be paying with?",
                    "May I have your ID and a card for any extras, please?"))
        d.say("C", ("Sure, here you go.", "Of course. Here they are."))
    d.pause()
    base = "<C> checks in at {hotel} for {nights} nights"
    if outcome == "not_ready":
        d.say("S", ("Your room isn't quite ready yet, I'm afraid. It should be ready by {ready}. "
                    "We can keep your luggage here until then.",
                    "I'm sorry, the room is still being cleaned. It'll be ready by {ready}, and "
                    "you're welcome to leave your bags with us."))
        d.say("C", ("That's fine, we'll go for a walk.", "No problem. I'll leave my bags and get lunch."))
        return base + ", but the room will not be ready until {ready}, so <C> leaves the luggage with <S>."
    if outcome.startswith("upgrade"):
        d.say("S", ("We have a room with a sea view available for an extra {price} a night. "
                    "Would you like to upgrade?",
                    "For {price} more per night, I could give you a bigger room with a balcony. "
                    "Interested?"))
        if outcome == "upgrade_yes":
            d.say("C", ("Why not? Yes, please.", "That sounds lovely. I'll take it."))
            base += " and accepts an upgrade for {price} more a night"
        else:
            d.say("C", ("No, thanks. The standard room is fine.", "I'll pass, thanks."))
            base += " and turns down an upgrade for {price} more a night"
    d.say("S", ("You're in room {room} on the {floor} floor. Breakfast is from {b1} to {b2}.",
                "Here's your key card for room {room}, on the {floor} floor. Breakfast is "
                "served from {b1} to {b2} in the restaurant."))
    if d.chance(0.5):
        d.say("C", ("Is there wifi in the rooms?", "Do you have wifi?"))
        d.say("S", ("Yes, it's free. The password is on your key card holder.",
                    "Yes, just connect to the hotel network. No password needed."))
    d.say("C", ("Great, thanks.", "Thank you very much.", "Perfect."))
    return base + ". <C> gets room {room}, and breakfast is from {b1} to {b2}."


_BAGS = ("a large red suitcase with a broken wheel", "a black backpack with a yellow tag",
         "a green duffel bag", "a small grey suitcase with stickers on it",
         "a navy suitcase with a white ribbon on the handle", "a brown leather holdall")


def _lost_luggage(d: _Builder) -> str:
    s = d.slots
    city, city2 = d.rng.sample(_CITIES, 2)
    s.update(flight=f"{d.pick(('KL', 'BA', 'TK', 'ET', 'NH', 'LH', 'QR'))} {d.rng.randint(100, 1999)}",
             city=city, city2=city2, bag=d.pick(_BAGS), hotel=d.pick(_HOTELS),
             ref=f"{d.pick(('LX', 'RB', 'QT', 'MK'))}{d.rng.randint(10000, 99999)}",
             k=d.pick(("three", "five")), price=d.price(80, 200), car=str(d.rng.randint(2, 9)))
    outcome = d.rng.choices(("elsewhere", "not_found", "carousel"), (5, 3, 2))[0]
    d.say("C", ("Excuse me, I've just arrived on flight {flight} from {city}, and my bag hasn't come out.",
                "Hi. My suitcase didn't come out on the belt. I was on {flight} from {city}.",
                "Hello, I think my luggage is lost. I came in on flight {flight} from {city}."))
    d.say("S", ("I'm sorry to hear that. Can you describe the bag?",
                "Oh dear. What does it look like?", "Let's see what we can do. What kind of bag is it?"))
    d.say("C", ("It's {bag}.", "It's {bag}. You can't miss it.", "Well, it's {bag}."))
    d.pause()
    if outcome == "carousel":
        d.say("S", ("Bags from that flight that were checked in late come out on carousel {car}. "
                    "Have you looked there?",
                    "Before we file anything, try carousel {car}. Late bags from {city} go there."))
        d.say("C", ("Oh! No, I didn't know that. I'll check.", "Really? I'll go and look. Thank you!"))
        return ("<C> reports a missing bag from flight {flight}, and <S> tells <C> to check "
                "carousel {car}, where late bags come out.")
    d.say("S", ("Let me check the system... just a moment.",
                "Can I see your boarding pass and baggage tag? I'll look it up."))
    if outcome == "elsewhere":
        d.say("S", ("It looks like your bag was left behind in {city2} when you changed planes. "
                    "It'll arrive on tomorrow's flight, and we'll deliver it to you.",
                    "Found it. It's still in {city2}, where you connected. We'll put it on the "
                    "first flight tomorrow and bring it to you."))
        d.say("C", ("Oh, thank goodness. I'm staying at {hotel}.",
                    "That's a relief. Can you send it to {hotel}? That's where I'm staying."))
        d.say("S", ("Of course. Here's your reference number: {ref}.",
                    "No problem. Your reference is {ref}, in case you need to call us."))
        if d.chance(0.5):
            d.say("C", ("Thank you for your help.", "Great, thanks."))
        return ("<C>'s bag from flight {flight} was left in {city2}. <S> says it will arrive "
                "tomorrow and be delivered to {hotel}, with reference {ref}.")
    d.say("S", ("I can't find it in the system yet. I'll file a report; most bags turn up within {k} days.",
                "There's no trace of it yet, I'm afraid. I'll open a report. Usually bags are "
                "found within {k} days."))
    d.say("C", ("But all my clothes are in there!", "Within {k} days? But I need my things now!"))
    d.say("S", ("I understand. You can buy essentials and claim back up to {price}. Just keep the receipts.",
                "You can spend up to {price} on essentials, and we'll pay you back if you keep the receipts."))
    if d.chance(0.5):
        d.say("C", ("OK, that helps a bit. Thanks.", "Fine. I'll keep every receipt."))
    return ("<C>'s bag from flight {flight} cannot be found, so <S> files a report and says "
            "<C> can claim up to {price} for essentials.")


# (problem sentence, diagnosis line, diagnosis summary)
_CAR_FAULTS = (
    ("There's a horrible squeaking noise when I brake.", "the brake pads are completely worn out",
     "the brake pads are worn out"),
    ("The engine warning light keeps coming on.", "one of the oxygen sensors has failed",
     "a sensor has failed"),
    ("It won't start on cold mornings.", "the battery is on its last legs",
     "the battery is dying"),
    ("The air conditioning only blows warm air.", "there's a leak in the air conditioning system",
     "the air conditioning has a leak"),
    ("It pulls to the left on the motorway.", "the wheels are out of alignment and a tyre is damaged",
     "the wheels need aligning and a tyre is damaged"),
)
_CARS = ("Toyota", "Volvo", "Ford", "Hyundai", "Peugeot", "Skoda", "Mazda", "Kia", "Renault")


def _car_repair(d: _Builder) -> str:
    s = d.slots
    problem, diag, diag_s = d.pick(_CAR_FAULTS)
    s.update(car=d.pick(_CARS), problem=problem, diag=diag, diag_s=diag_s, price=d.price(120, 900),
             day=d.pick(_WEEKDAYS), time=_clock(d.pick((12, 15, 16, 17))), mech=d.first())
    outcome = d.rng.choices(("accept", "decline", "courtesy"), (5, 2, 3))[0]
    if d.chance(0.5):
        d.say("M", ("Morning! What can I do for you?", "Hi, I'm {mech}. What seems to be the problem?"))
        d.say("C", ("My {car} is giving me trouble. {problem}", "It's my {car}. {problem}"))
    else:
        d.say("C", ("Hi, I've booked my {car} in for this morning. {problem}",
                    "Hello. Could you have a look at my {car}? {problem}",
                    "Morning. {problem} It's the {car} parked outside."))
    d.say("M", ("Right, leave it with me and I'll take a look.", "OK, let me have a look at it.",
                "Sure. Give me half an hour and I'll tell you what's going on."))
    d.say("C", ("Thanks. I'll wait over there.", "Great, I'll grab a coffee while I wait.",
                "Sure, I'll be in the waiting room."))
    d.pause()
    d.say("M", ("OK, I've found it: {diag}. It'll cost about {price}, parts and labour.",
                "So, {diag}. The repair comes to {price} all in.",
                "Bad news, I'm afraid: {diag}. You're looking at {price}."))
    if outcome == "decline":
        d.say("C", ("{price}? That's more than I expected. I'll get a second opinion first.",
                    "Hmm, that's a lot. Let me think about it and call you back."))
        d.say("M", ("That's your choice. I wouldn't drive it too far, though.",
                    "Fair enough. Just don't leave it too long."))
        return ("<M> finds that {diag_s} on <C>'s {car} and quotes {price}, but <C> thinks it is "
                "too expensive and wants a second opinion.")
    d.say("C", ("Fine, go ahead. When will it be ready?", "OK, please fix it. When can I pick it up?",
                "I suppose I have no choice. How long will it take?"))
    d.say("M", ("It'll be ready on {day} by {time}.", "We need to order a part, so {day}, around {time}."))
    if outcome == "courtesy":
        d.say("C", ("Is there any chance of a courtesy car? I need one for work.",
                    "Do you have a car I could borrow until then?"))
        d.say("M", ("Yes, we have a small one you can use until {day}.",
                    "Sure, you can take our courtesy car until yours is ready."))
        return ("<M> finds that {diag_s} on <C>'s {car}. <C> agrees to the {price} repair, which "
                "will be ready on {day} by {time}, and borrows a courtesy car until then.")
    if d.chance(0.5):
        d.say("C", ("Great, see you then.", "Thanks. I'll get the bus home."))
    return ("<M> finds that {diag_s} on <C>'s {car}. <C> agrees to the {price} repair, which "
            "will be ready on {day} by {time}.")


_TITLES = ("The Silent River", "A Short History of Maps", "Introduction to Statistics",
           "The Salt Road", "Cooking Without Fire", "Patterns of the Sea", "The Glass Orchard",
           "Modern Urban Design", "Small Gods of the Delta", "The Cartographer's Daughter")


def _library_loan(d: _Builder) -> str:
    s = d.slots
    s.update(title=d.pick(_TITLES), author=f"{d.first()} {d.surname()}", due=d.date(),
             weeks=d.pick(("two", "three", "four")),
             sec=f"{d.rng.randint(1, 9)}{d.pick('ABCDE')}", fine=d.price(1, 9, cents=True))
    outcome = d.rng.choices(("borrowed", "on_loan", "fine"), (5, 3, 2))[0]
    if d.chance(0.4):
        d.say("L", ("Hi, can I help you find something?", "Hello! Are you looking for anything in particular?"))
    d.say("C", ("Hi, I'm looking for {title} by {author}. Do you have it?",
                "Do you have a copy of {title}? It's by {author}.",
                "Excuse me, I need {title} by {author} for my essay. Is it in?"))
    d.say("L", ("Let me check the catalogue...", "One moment, I'll look it up.", "Let's see..."))
    if outcome == "on_loan":
        d.say("L", ("It's out at the moment, I'm afraid. It's due back on {due}. Would you like to reserve it?",
                    "Someone has borrowed it until {due}. Shall I put a reservation on it for you?"))
        d.say("C", ("Yes, please.", "Yes, please do. I really need it."))
        d.say("L", ("Done. We'll send you an email when it's back.",
                    "OK, you're first in the queue. You'll get a message when it comes in."))
        return "<C> wants {title} by {author}, but it is on loan until {due}, so <L> reserves it for <C>."
    d.say("L", ("Yes, we have it in section {sec}. Can I see your library card?",
                "Good news, there's a copy on the shelf in section {sec}. Have you got your card?"))
    d.say("C", ("Here you go.", "Sure, here it is."))
    d.pause()
    if outcome == "fine":
        d.say("L", ("Hmm, there's an unpaid fine of {fine} on your card for a late book. You'll "
                    "need to pay it before you can borrow anything.",
                    "Before I can lend it to you, there's a late fee of {fine} on your account."))
        d.say("C", ("Oh, I forgot about that. Can I pay now?", "Sorry, my fault. I'll pay it now."))
        d.say("L", ("Sure, that's paid. Here's your book, it's due back on {due}.",
                    "Thanks, all cleared. The book is due back on {due}."))
        return "<C> pays a {fine} late fee and borrows {title} by {author}, which is due back on {due}."
    d.say("L", ("You can keep it for {weeks} weeks, so it's due back on {due}.",
                "There you go. It's a {weeks}-week loan, so please return it by {due}."))
    if d.chance(0.5):
        d.say("C", ("Can I renew it if I need it longer?", "What if I need it for longer?"))
        d.say("L", ("Yes, you can renew it once online or here at the desk.",
                    "Just renew it on the website, as long as nobody has reserved it."))
    return "<C> borrows {title} by {author} for {weeks} weeks, and it is due back on {due}."


_GYMS = ("FitZone", "Peak Fitness", "Riverside Gym", "IronWorks", "Pulse Studio", "Blue Whale Leisure Centre")


def _gym_membership(d: _Builder) -> str:
    s = d.slots
    p1 = d.rng.randint(30, 60)
    s.update(gym=d.pick(_GYMS), p1=f"{s['cur']}{p1}", p2=f"{s['cur']}{p1 - d.rng.randint(8, 15)}",
             fee=d.price(20, 50), sname=d.first(), cls=d.pick(("yoga", "spinning", "boxing", "pilates")))
    outcome = d.rng.choices(("standard", "off_peak", "trial", "declined"), (4, 3, 2, 2))[0]
    if d.chance(0.5):
        d.say("S", ("Hi, welcome to {gym}! Can I help you?",
                    "Hello, welcome to {gym}. I'm {sname}. Are you here about membership?"))
        d.say("C", ("Yes, I'm thinking of joining. How much is it?", "Hi, yes. What are your membership prices?"))
    else:
        d.say("C", ("Hi, I'm interested in joining {gym}. How much is membership?",
                    "Hello. Could you tell me about membership options at {gym}?"))
    d.say("S", ("Our standard plan is {p1} a month, or {p2} if you only come before 4 pm on weekdays.",
                "It's {p1} a month for full access, or {p2} for off-peak, which means weekdays before 4 pm."))
    if d.chance(0.5):
        d.say("C", ("Are classes included? I'd love to do {cls}.", "Does that include {cls} classes?"))
        d.say("S", ("Yes, all classes are included, {cls} too.", "Yes, {cls} is included in both plans."))
    if d.chance(0.4):
        d.say("S", ("There's also a one-off joining fee of {fee}.", "Oh, and there's a joining fee of {fee}."))
        d.say("C", ("Hmm, OK.", "I see."))
    d.pause()
    if outcome == "declined":
        d.say("C", ("That's a bit over my budget, to be honest. I'll think about it.",
                    "I think I'll keep running outside for now. Thanks anyway."))
        d.say("S", ("No problem. Here's a leaflet in case you change your mind.", "Sure. Come back any time."))
        return ("<C> asks about membership at {gym}, which costs {p1} a month or {p2} off-peak, but "
                "decides not to join for now.")
    if outcome == "trial":
        d.say("C", ("Could I try it out first?", "Before I decide, can I have a look around or try a session?"))
        d.say("S", ("Of course. Here's a free day pass. Come back and see me after your workout.",
                    "Sure, you can have a free trial today."))
        return "<C> asks about membership at {gym}, which costs {p1} a month, and takes a free trial first."
    if outcome == "off_peak":
        d.say("C", ("I work from home, so the off-peak one sounds perfect. I'll take it.",
                    "I'll go for the off-peak plan, then."))
        d.say("S", ("Great choice. Let's get you signed up.", "Lovely. I just need a few details."))
        return "<C> joins {gym} on the off-peak plan for {p2} a month, which covers weekdays before 4 pm."
    d.say("C", ("I'll take the standard plan, please.", "Full access, please. I'll sign up today."))
    d.say("S", ("Great. Let's get you signed up.", "Wonderful, I'll get the form."))
    return "<C> signs up for the standard membership at {gym} for {p1} a month."


_FLAT_DOUBTS = (
    ("Hmm. The bedroom is smaller than I need, to be honest.", "the bedroom is too small"),
    ("It's nice, but the street is a bit noisy for me.", "the street is too noisy"),
    ("It's lovely, but it's a long way from my office.", "it is too far from <C>'s office"),
)


def _flat_viewing(d: _Builder) -> str:
    s = d.slots
    rent = d.rng.randint(6, 22) * 50
    s.update(address=f"{d.rng.randint(2, 98)} {d.pick(_STREETS)}", rent=f"{s['cur']}{rent:,}",
             deposit=f"{s['cur']}{rent * 2:,}", avail=d.date(), day=d.pick(_DAYS),
             time=_time_between(d.rng, 10, 18, 30), beds=d.pick(("one-bedroom", "two-bedroom", "studio")),
             aname=d.first())
    outcome = d.rng.choices(("apply", "small", "pets", "second"), (4, 2, 1, 3))[0]
    d.say("A", ("Here we are, {address}. Come on in.",
                "Hi, you must be here for the viewing at {address}. I'm {aname}.",
                "So, this is the {beds} flat at {address}. It's just been repainted."))
    d.say("C", ("Thanks. Oh, it's brighter than in the photos.", "Thank you. It looks lovely.",
                "Thanks. Wow, the living room is bigger than I thought."))
    d.say("A", ("It gets the sun all afternoon. The kitchen is through here.",
                "Yes, and the kitchen has a new fridge and washing machine."))
    d.say("C", ("How much is the rent?", "What's the rent, exactly?", "Nice. And how much is it?"))
    d.say("A", ("It's {rent} a month, and the deposit is {deposit}.",
                "{rent} per month, plus a deposit of {deposit}."))
    d.pause()
    base = "<A> shows <C> the flat at {address}, which costs {rent} a month with a {deposit} deposit."
    if d.chance(0.5):
        d.say("C", ("When is it available?", "When could I move in?"))
        d.say("A", ("From {avail}.", "It's free from {avail}."))
        base = "<A> shows <C> the flat at {address}, available from {avail} for {rent} a month."
    if outcome == "pets":
        d.say("C", ("I have a cat. Is that allowed?", "Are pets OK? I have a cat."))
        d.say("A", ("I'm afraid the landlord doesn't allow pets.", "Sorry, no pets in this building."))
        d.say("C", ("Then it's not for me, sadly. Thanks for showing me around.",
                    "That's a shame. I can't leave my cat behind."))
        return base + " <C> turns it down because pets are not allowed."
    if outcome == "small":
        doubt, doubt_s = d.pick(_FLAT_DOUBTS)
        s["doubt_s"] = doubt_s
        d.say("C", (doubt,))
        d.say("A", ("I understand. I have other flats that might suit you better.",
                    "Fair enough. I'll let you know if something else comes up."))
        return base + " <C> decides against it because {doubt_s}."
    if outcome == "second":
        d.say("C", ("I'd like my partner to see it too. Could we come back on {day}?",
                    "Could I bring my flatmate on {day} for a second look?"))
        d.say("A", ("Sure. How about {time}?", "{day} is fine. Is {time} OK?"))
        d.say("C", ("{time} is perfect.", "Yes, see you then."))
        return base + " <C> arranges a second viewing on {day} at {time}."
    d.say("C", ("I'd like to apply for it.", "I really like it. How do I apply?"))
    d.say("A", ("Great! I'll email you the application form today.",
                "Wonderful. I'll send you the form this afternoon."))
    return base + " <C> decides to apply for it."


_VENUES = ("Sakura House", "Casa Mariana", "a karaoke bar on King Street", "the rooftop bar at Hotel Aurora",
           "Luigi's", "the bowling alley on Station Road")
_PARTY_TASKS = (("bake the cake", "I'll bake the cake.", "I can bake the cake, if you like."),
                ("send the invitations", "I'll send the invitations.", "I can do the invitations."),
                ("sort out the music", "I'll sort out the music.", "Leave the music to me."),
                ("buy the decorations", "I'll get the decorations.", "I can pick up some decorations."))
_AGES = ("thirty", "forty", "twenty-one", "eighteen", "fifty", "twenty-five")


def _birthday_party(d: _Builder) -> str:
    s = d.slots
    day, day2 = d.rng.sample(_DAYS, 2)
    s.update(hon=d.first(), age=d.pick(_AGES), venue=d.pick(_VENUES), day=day, day2=day2,
             time=_clock(d.pick((18, 19, 20)), d.pick((0, 30))), budget=d.price(15, 40),
             a=d.first(), b=d.first(), c=d.first())
    tasks = d.rng.sample(_PARTY_TASKS, 3)
    outcome = d.rng.choices(("agreed", "moved", "budget"), (4, 3, 3))[0]
    d.say("A", ("So, {hon}'s birthday is on {day}. Should we throw a surprise party?",
                "You know {hon} turns {age} on {day}? We have to do something special.",
                "Guys, {hon}'s birthday is coming up on {day}. Surprise party?"))
    d.say("B", ("Definitely! Where should we have it?", "Yes! I'm in. Any ideas for a place?",
                "Love it. But where?"))
    d.say("C", ("What about {venue}? {hon} loves it there.", "How about {venue}? They have a private room."))
    if outcome == "moved":
        d.say("B", ("Wait, isn't {hon} visiting family on {day}?", "Hang on, {hon} told me they're away on {day}."))
        d.say("A", ("Oh, you're right. Let's do {day2} instead.", "Good point. {day2} then?"))
        d.say("C", ("{day2} works for me.", "Fine, {day2} it is."))
    elif outcome == "budget":
        d.say("B", ("Isn't that a bit expensive? Some people are short of money this month.",
                    "Sounds great, but how much would it cost per person?"))
        d.say("C", ("Let's keep it to {budget} each, then.", "I'd say no more than {budget} per person."))
        d.say("A", ("Agreed, {budget} each.", "OK, a {budget} limit each. Fair enough."))
    else:
        d.say("A", ("Perfect. Let's say {day} at {time}.", "Good idea. {day} at {time}?"))
        d.say("B", ("Sounds good.", "{time} works for me."))
    d.pause()
    d.say("A", ("Now, who's doing what?", "OK, let's split the jobs.", "Right. Jobs?"))
    d.say("B", (tasks[0][1], tasks[0][2]))
    d.say("C", ("And " + tasks[1][1], tasks[1][2]))
    d.say("A", ("Then " + tasks[2][1] + " Don't tell {hon}!", tasks[2][2] + " And not a word to {hon}!"))
    first = "<A>, <B> and <C> plan a surprise party for {hon}'s birthday at {venue} on {day}"
    if outcome == "agreed":
        first += " at {time}"
    elif outcome == "budget":
        first += " with a limit of {budget} per person"
    elif outcome == "moved":
        first = ("<A>, <B> and <C> plan a surprise party for {hon}'s birthday at {venue}, moving it "
                 "to {day2} because {hon} is away on {day}")
    return first + f". <B> will {tasks[0][0]}, <C> will {tasks[1][0]} and <A> will {tasks[2][0]}."


_PROJECTS = ("the Orion report", "the website redesign", "the Q3 budget", "the Atlas app launch",
             "the customer survey", "the Lisbon conference plan")
_CLIENTS = ("Harbour Bank", "Nordvik Software", "Baobab Foods", "Kestrel Media", "Sunrise Hotels")
_PARTS = ("slides", "data analysis", "final proofreading", "budget table", "test plan", "client summary")


def _team_meeting_deadline(d: _Builder) -> str:
    s = d.slots
    old, new, later = d.rng.sample(_DAYS[:5], 3)
    p1, p2 = d.rng.sample(_PARTS, 2)
    s.update(project=d.pick(_PROJECTS), client=d.pick(_CLIENTS), old=old, new=new, later=later,
             p1=p1, p2=p2, x=d.first(), y=d.first(), time=_clock(d.pick((10, 14, 16))))
    outcome = d.rng.choices(("split", "extension", "refused"), (4, 3, 3))[0]
    d.say("M", ("Thanks for joining, everyone. I've got news about {project}: {client} wants it by {new} "
                "instead of {old}.",
                "OK, quick one. {client} has moved the deadline for {project} from {old} to {new}.",
                "Morning, both. Bad news, I'm afraid: {client} now wants {project} by {new}, not {old}."))
    d.say("X", ("{new}? That's really tight.", "Seriously? We were counting on {old}.",
                "Wow. That doesn't give us much time."))
    d.say("Y", ("We haven't even started the {p2} yet.", "And the {p1} is only half done.",
                "I'm not sure we can do it all by {new}."))
    if outcome in ("extension", "refused"):
        d.say("Y", ("Could we ask {client} for an extension until {later}?",
                    "Is there any chance {client} would give us until {later}?"))
        if outcome == "extension":
            d.say("M", ("I already asked, and they agreed to {later} for the {p2} only.",
                        "Good idea. I'll call them... actually, they've just emailed: {later} is OK for the {p2}."))
            tail = ", but {client} agrees to extend the {p2} until {later}"
        else:
            d.say("M", ("I tried. They said {new} is final, so we'll have to manage.",
                        "No, they were very clear that {new} is the latest."))
            tail = ", and refuses <Y>'s request for an extension"
    else:
        tail = ""
    d.pause()
    d.say("M", ("{x}, can you take the {p1}? {y}, the {p2} is yours.",
                "So, let's split it: {x} on the {p1}, and {y} on the {p2}.",
                "Here's the plan. {x} does the {p1}, {y} does the {p2}."))
    d.say("X", ("Fine, I'll start on the {p1} right after this.", "OK, the {p1} is mine."))
    d.say("Y", ("Sure, I'll do the {p2}.", "Got it. I'll clear my afternoon for the {p2}."))
    if d.chance(0.5):
        d.say("M", ("Great. Let's check in again tomorrow at {time}.", "Thanks, both. Same time tomorrow, {time}?"))
        return ("<M> tells <X> and <Y> that {client} has moved the deadline for {project} from {old} to "
                "{new}" + tail + ". <X> will do the {p1} and <Y> the {p2}, and they will check in again "
                "tomorrow at {time}.")
    return ("<M> tells <X> and <Y> that {client} has moved the deadline for {project} from {old} to "
            "{new}" + tail + ". <X> will do the {p1} and <Y> the {p2}.")


_PROVIDERS = ("Telvo", "Skyline Mobile", "Nexa", "Orbit Telecom", "Kora Mobile")


def _phone_plan_change(d: _Builder) -> str:
    s = d.slots
    gb1, gb2 = d.rng.sample((5, 10, 20, 30, 50, 100), 2)
    p1, p2 = d.rng.randint(10, 40), d.rng.randint(10, 40)
    if (gb2 > gb1) != (p2 > p1):
        p1, p2 = p2, p1
    if p1 == p2:
        p2 += 3 if gb2 > gb1 else -3
    s.update(provider=d.pick(_PROVIDERS), aname=d.first(), phone=d.phone(), gb1=f"{gb1} GB",
             gb2=f"{gb2} GB", p1=f"{s['cur']}{p1}", p2=f"{s['cur']}{p2}",
             months=d.pick(("three", "five", "seven", "ten")), fee=d.price(40, 120))
    outcome = d.rng.choices(("switch", "contract"), (7, 3))[0]
    more = gb2 > gb1
    d.say("S", ("Thank you for calling {provider}, this is {aname}. How can I help?",
                "{provider} customer service, {aname} speaking."))
    d.say("C", ("Hi, I'd like to change my phone plan. I keep running out of data." if more else
                "Hello. I think I'm paying too much for my plan, and I'd like something cheaper.",
                "Hi there. My current plan doesn't suit me any more, so I'd like to change it."))
    d.say("S", ("Sure. What's the phone number on the account?",
                "Of course. Can I have the mobile number, please?"))
    d.say("C", ("It's {phone}.", "Yes, {phone}."))
    d.say("S", ("Thanks. I can see you're on the {gb1} plan at {p1} a month.",
                "Got it. At the moment you have {gb1} of data for {p1} a month."))
    d.pause()
    if outcome == "contract":
        d.say("S", ("However, you're still in contract for another {months} months, so changing now "
                    "would cost {fee}.",
                    "The thing is, there are {months} months left on your contract. Switching early "
                    "means a {fee} fee."))
        d.say("C", ("{fee}? Then I'll wait until the contract ends.",
                    "That's not worth it. I'll stay on my plan until then."))
        if d.chance(0.5):
            d.say("S", ("Understood. I'll add a note so we can switch you as soon as it ends.",
                        "No problem. Just call us again in {months} months."))
        return ("<C> wants to change from the {gb1} plan at {p1} a month, but the contract still has "
                "{months} months left and switching would cost {fee}, so <C> decides to wait.")
    d.say("S", ("We have a {gb2} plan for {p2} a month. Would that work?",
                "I could move you to {gb2} for {p2} a month."))
    d.say("C", ("That sounds much better. Let's do it.", "Yes, please switch me to that one.",
                "{gb2} for {p2}? Perfect."))
    d.say("S", ("Done. The new plan starts at your next billing date.",
                "All set. You'll get a text to confirm the change."))
    if d.chance(0.5):
        d.say("C", ("Thanks for your help.", "Great, thank you!"))
    return "<C> switches from the {gb1} plan at {p1} a month to {gb2} for {p2} a month with {provider}."


_MERCHANTS = ("an electronics shop", "an online shop called QuickBuy", "a petrol station in Leeds",
              "a furniture store in Porto", "a website called GameVault")
_COUNTRIES = ("Portugal", "Japan", "Kenya", "Mexico", "Turkey", "Canada", "Vietnam")


def _bank_card_blocked(d: _Builder) -> str:
    s = d.slots
    s.update(full=f"{d.first()} {d.surname()}", last4=f"{d.rng.randint(0, 9999):04d}",
             amount=d.price(60, 1500, cents=d.chance(0.5)), merchant=d.pick(_MERCHANTS),
             k=d.pick(("three", "five", "seven")), country=d.pick(_COUNTRIES), date=d.date(),
             aname=d.first(), shop=d.pick(("the supermarket", "a café", "the chemist")))
    outcome = d.rng.choices(("mine", "fraud", "abroad"), (4, 4, 2))[0]
    if outcome == "abroad":
        s["merchant"] = f"a shop in {s['country']}"
    d.say("S", ("Hello, you're through to card services. My name is {aname}. How can I help?",
                "Good afternoon, card services, {aname} speaking."))
    d.say("C", ("Hi, my card was declined at {shop} just now, and the app says it's blocked.",
                "Hello. My card has been blocked and I don't know why.",
                "Hi, I can't pay with my card. It says it's been blocked."))
    d.say("S", ("I can help with that. For security, can you confirm your full name and the last "
                "four digits of the card?",
                "Let's sort it out. First, what's your full name and the last four digits of the card?"))
    d.say("C", ("{full}, and it ends in {last4}.", "It's {full}. The card ends in {last4}."))
    d.pause()
    d.say("S", ("Thank you. The card was blocked because of a payment of {amount} at {merchant}. "
                "Did you make that payment?",
                "Thanks. We stopped a payment of {amount} at {merchant} because it looked unusual. Was that you?"))
    if outcome == "fraud":
        d.say("C", ("No, I've never heard of it!", "No! That wasn't me at all."))
        d.say("S", ("Then I'll cancel this card and send you a new one. It should arrive within {k} "
                    "working days, and you won't pay for that transaction.",
                    "In that case I'm cancelling the card now. A new one will reach you within {k} "
                    "working days, and the {amount} won't be charged."))
        if d.chance(0.5):
            d.say("C", ("Thank you. What do I do until then?", "OK. Can I still use my phone to pay?"))
            d.say("S", ("You can take cash out at any branch with your ID.",
                        "Not with this card, but you can withdraw cash at a branch."))
        return ("<C>'s card was blocked after a payment of {amount} at {merchant} that <C> did not make. "
                "<S> cancels the card and sends a new one within {k} working days.")
    if outcome == "abroad":
        d.say("C", ("Yes, that was me. I'm on holiday in {country}.",
                    "Yes! I'm travelling in {country} at the moment."))
        d.say("S", ("Thanks. I've unblocked it and added a travel note until {date}, so it won't happen again.",
                    "OK, the card is active again, and I've noted that you're abroad until {date}."))
        return ("<C>'s card was blocked after a payment of {amount} in {country}, where <C> is on holiday. "
                "<S> unblocks it and adds a travel note until {date}.")
    d.say("C", ("Yes, that was me.", "Oh, yes, that was me. I didn't expect it to be blocked.",
                "Yes, that was mine. It was a bigger payment than usual."))
    d.say("S", ("Great, I've unblocked the card. You can use it again right away.",
                "Thanks for confirming. The card is active again."))
    if d.chance(0.5):
        d.say("C", ("Perfect, thanks.", "That was quick. Thank you!"))
    return ("<C>'s card was blocked because of a payment of {amount} at {merchant}. <C> confirms "
            "making it, so <S> unblocks the card.")


# (medicine, instruction line, instruction summary, question, answer)
_MEDS = (
    ("amoxicillin", "Take one capsule three times a day for seven days.",
     "take one capsule three times a day for seven days", "Can I drink alcohol with it?",
     "Better not until you've finished the course."),
    ("an inhaler", "Take two puffs whenever you feel short of breath.",
     "take two puffs when short of breath", "How many times a day can I use it?",
     "Up to four times. If you need it more, see your doctor."),
    ("antihistamine tablets", "Take one tablet every morning.", "take one tablet every morning",
     "Will they make me sleepy?", "These ones shouldn't, but don't drive if they do."),
    ("ibuprofen gel", "Rub it on the sore area up to three times a day.",
     "use it on the sore area up to three times a day", "Can I use it with a bandage?",
     "Yes, just let it dry for a minute first."),
    ("eye drops", "Put two drops in each eye twice a day.", "use two drops in each eye twice a day",
     "Should I keep them in the fridge?", "Yes, once you've opened the bottle."),
)


def _pharmacy_prescription(d: _Builder) -> str:
    s = d.slots
    med, instr, instr_s, q, a = d.pick(_MEDS)
    s.update(med=med, instr=instr, instr_s=instr_s, q=q, a=a, full=f"{d.first()} {d.surname()}",
             doc=d.surname(), price=d.price(5, 25, cents=d.chance(0.5)),
             time=_clock(d.pick((12, 15, 16, 17)), d.pick((0, 30))), street=d.pick(_STREETS))
    outcome = d.rng.choices(("ready", "not_ready", "out_of_stock"), (5, 3, 2))[0]
    d.say("C", ("Hi, I'm here to pick up a prescription for {full}.",
                "Hello, Dr {doc} sent over a prescription for me this morning. The name's {full}.",
                "Hi. I've come to collect a prescription. It's under {full}."))
    d.say("P", ("Let me check...", "One moment, please.", "Sure, let me have a look."))
    if outcome == "not_ready":
        d.say("P", ("It's not ready yet, I'm afraid. Could you come back at {time}?",
                    "We've only just received it from Dr {doc}. It'll be ready at {time}."))
        d.say("C", ("OK, I'll come back then.", "Fine, I'll do some shopping and come back at {time}."))
        d.say("P", ("Sorry about the wait. See you later.", "Thanks for your patience.", "See you then."))
        return "<C> comes to collect a prescription, but it is not ready yet, so <P> asks <C> to come back at {time}."
    if outcome == "out_of_stock":
        d.say("P", ("I have the prescription from Dr {doc}, but we've run out of {med}. Our branch "
                    "on {street} has some, or we'll have more tomorrow.",
                    "Dr {doc}'s prescription is here, but {med} is out of stock. You could try our "
                    "shop on {street}."))
        d.say("C", ("I'll go to {street} then. Thanks.", "OK, I'll try {street} this afternoon."))
        d.say("P", ("Sorry about that. I'll call them to say you're coming.", "Sorry for the trouble."))
        return ("<C> wants to collect {med} prescribed by Dr {doc}, but it is out of stock, so <C> "
                "will try the branch on {street}.")
    d.say("P", ("Yes, here it is: {med}, prescribed by Dr {doc}.",
                "Here we are. Dr {doc} has prescribed {med} for you."))
    d.pause()
    d.say("C", ("Great. How should I take it?", "Thanks. Is there anything I should know?",
                "What are the instructions?"))
    d.say("P", ("{instr}", "{instr} Call us if you have any questions."))
    if d.chance(0.6):
        d.say("C", ("{q}",))
        d.say("P", ("{a}",))
    d.say("P", ("That'll be {price}, please.", "The prescription charge is {price}."))
    d.say("C", ("Here you go. Thanks for your help.", "Thanks. Can I pay by card?"))
    return "<C> collects {med} prescribed by Dr {doc} and pays {price}. <P> tells <C> to {instr_s}."


_COURSES = ("Introduction to Economics", "Spanish for Beginners", "Organic Chemistry II",
            "Creative Writing", "World History", "Linear Algebra", "Marine Biology")


def _course_registration(d: _Builder) -> str:
    s = d.slots
    days = d.pick(("Mondays and Wednesdays", "Tuesdays and Thursdays", "Wednesdays and Fridays"))
    s.update(course=d.pick(_COURSES), sid=str(d.rng.randint(2100000, 2499999)), days=days,
             time=_clock(d.pick((9, 10, 11, 13, 14))), day2=d.pick(_WEEKDAYS),
             time2=_clock(d.pick((17, 18, 19))), room=f"{d.pick('ABCD')}{d.rng.randint(101, 320)}",
             pos=d.pick(("two", "three", "four", "six", "eight")), other=d.pick(_COURSES))
    while s["other"] == s["course"]:
        s["other"] = d.pick(_COURSES)
    outcome = d.rng.choices(("enrolled", "full", "clash"), (4, 3, 3))[0]
    d.say("C", ("Hi, I'd like to sign up for {course}.", "Hello, is there still space in {course} this term?",
                "Hi. Can I still register for {course}?"))
    d.say("S", ("Let me look. What's your student number?", "Sure. Can I have your student ID number?"))
    d.say("C", ("It's {sid}.", "{sid}."))
    d.pause()
    if outcome == "full":
        d.say("S", ("That course is full, I'm afraid, but I can put you on the waiting list. You'd be number {pos}.",
                    "It's full at the moment. Shall I add you to the waiting list? There are people ahead of you, "
                    "so you'd be number {pos}."))
        d.say("C", ("Yes, please do.", "OK, that's better than nothing."))
        if d.chance(0.5):
            d.say("S", ("Done. People often drop out in the first week, so you have a good chance.",
                        "You're on it. We'll email you if a place opens up."))
        return "{course} is full, so <S> puts <C> on the waiting list at number {pos}."
    if outcome == "clash":
        d.say("S", ("The {time} section clashes with your {other} class. There's an evening section on "
                    "{day2} at {time2}, though.",
                    "Hmm, the day class is at the same time as {other}. Would the {day2} evening "
                    "class at {time2} work?"))
        d.say("C", ("I'll take the evening one, then.", "{day2} at {time2} is fine."))
        d.say("S", ("OK, you're registered for the {day2} class.", "Done. See you there!"))
        return ("<C> wants to take {course}, but the day class clashes with {other}, so <C> "
                "registers for the evening class on {day2} at {time2}.")
    d.say("S", ("You're in. Classes are on {days} at {time} in room {room}.",
                "There are a few places left. I've registered you: {days}, {time}, room {room}."))
    if d.chance(0.5):
        d.say("C", ("Do I need to buy a textbook?", "Is there any reading before the first class?"))
        d.say("S", ("The reading list will be online next week.", "The lecturer will tell you in the first class."))
    d.say("C", ("Great, thanks a lot.", "Perfect. Thank you!"))
    return "<C> registers for {course}, which meets on {days} at {time} in room {room}."


_PLACES = ("the train station", "the National Museum", "the post office", "Central Library",
           "the city hospital", "Victoria Park", "the town hall", "the bus station")
_LANDMARKS = ("bakery", "bank", "traffic lights", "church", "petrol station", "big supermarket")


def _asking_directions(d: _Builder) -> str:
    s = d.slots
    s.update(place=d.pick(_PLACES), landmark=d.pick(_LANDMARKS), mins=d.pick(("five", "ten", "fifteen")),
             bus=str(d.rng.randint(3, 88)), freq=d.pick(("ten", "fifteen", "twenty")),
             blocks=d.pick(("two", "three")))
    outcome = d.rng.choices(("walk", "bus", "unknown"), (5, 3, 2))[0]
    d.say("A", ("Excuse me, could you tell me how to get to {place}?",
                "Sorry to bother you, do you know where {place} is?",
                "Hi, I'm a bit lost. Which way is {place}?"))
    if outcome == "unknown":
        d.say("B", ("Sorry, I'm not from around here. Maybe ask at the café across the road?",
                    "I'm afraid I don't know. I'm just visiting myself. Try the shop on the corner."))
        d.say("A", ("OK, thanks anyway.", "No problem, thanks."))
        d.say("B", ("Good luck!", "Sorry I couldn't help.", "You're welcome. Hope you find it!"))
        return "<A> asks <B> the way to {place}, but <B> does not know and suggests asking someone else."
    if outcome == "bus":
        d.say("B", ("It's quite far from here. You'd better take the number {bus} bus from the stop over there.",
                    "Oh, that's a long walk. Take the {bus} bus. The stop is just there."))
        d.say("A", ("How often does it run?", "Do you know how often it comes?"))
        d.say("B", ("Every {freq} minutes or so.", "About every {freq} minutes."))
        d.say("A", ("Great, thank you!", "Thanks so much."))
        return "<A> asks <B> the way to {place}. <B> says it is far and suggests taking the number {bus} bus."
    d.say("B", ("Sure. Go straight down this road for {blocks} blocks, then turn left at the {landmark}. "
                "It's on your right.",
                "Yes, go straight for {blocks} blocks and turn left at the {landmark}. You can't miss it."))
    if d.chance(0.6):
        d.say("A", ("Is it far?", "How long does it take to walk?"))
        d.say("B", ("About {mins} minutes on foot.", "Maybe {mins} minutes, if you walk fast."))
        tail = ", about {mins} minutes on foot"
    else:
        tail = ""
    d.say("A", ("Thank you so much!", "Great, thanks for your help."))
    d.say("B", ("You're welcome!", "No problem. Enjoy your day!", "Any time."))
    return "<A> asks <B> the way to {place}. <B> tells <A> to go straight and turn left at the {landmark}" + tail + "."


# name -> (topic, template, is a phone call)
_REGISTRY: dict[str, tuple[str, Callable[[_Builder], str], bool]] = {
    "restaurant_booking": ("restaurant booking", _restaurant_booking, True),
    "item_return": ("item return", _item_return, False),
    "doctor_appointment": ("doctor appointment", _doctor_appointment, True),
    "train_ticket": ("train ticket", _train_ticket, False),
    "job_interview": ("job interview", _job_interview, False),
    "hotel_checkin": ("hotel check-in", _hotel_checkin, False),
    "lost_luggage": ("lost luggage", _lost_luggage, False),
    "car_repair": ("car repair", _car_repair, False),
    "library_loan": ("library loan", _library_loan, False),
    "gym_membership": ("gym membership", _gym_membership, False),
    "flat_viewing": ("flat viewing", _flat_viewing, False),
    "birthday_party": ("birthday party planning", _birthday_party, False),
    "team_meeting_deadline": ("team meeting deadline", _team_meeting_deadline, False),
    "phone_plan_change": ("phone plan change", _phone_plan_change, True),
    "bank_card_blocked": ("bank card blocked", _bank_card_blocked, True),
    "pharmacy_prescription": ("pharmacy prescription", _pharmacy_prescription, False),
    "course_registration": ("course registration", _course_registration, False),
    "asking_directions": ("asking directions", _asking_directions, False),
}

SCENARIOS: tuple[str, ...] = tuple(_REGISTRY)
"""Names of the available scenario templates (the ``scenarios`` argument takes these)."""

# --------------------------------------------------------------------------------------
# Small-talk asides: (opener options, reply options, where they fit)
# --------------------------------------------------------------------------------------

_ASIDES = (
    (("It's really pouring out there today.", "What awful rain we're having, eh?"),
     ("I know, I got completely soaked on the way here.", "Tell me about it. My umbrella turned inside out."),
     "any"),
    (("Beautiful weather today, isn't it?", "At least the sun's finally out today."),
     ("It is. I might go for a walk later.", "Yes, about time too after last week."), "any"),
    (("Any plans for the weekend?", "Doing anything nice this weekend?"),
     ("Not really, just relaxing at home.", "I'm visiting my parents, actually."), "any"),
    (("Did you see the match last night?", "Did you watch the game yesterday?"),
     ("I missed it! Don't tell me the score.", "Only the second half. What a finish!"), "any"),
    (("The traffic was awful this morning, by the way.", "Sorry, the roads are a nightmare today."),
     ("I know, there are roadworks everywhere.", "Yes, I heard there was an accident on the bridge."), "any"),
    (("Sorry, I'm so tired today. I really need a coffee.", "Excuse me, it's been a long day."),
     ("Ha, I know the feeling.", "Same here. It's been a long week."), "any"),
    (("I like your scarf, by the way.", "That's a nice jacket, by the way."),
     ("Oh, thanks! It was a present.", "Thank you, I got it on holiday."), "face"),
    (("Sorry, I'm a bit slow today. I hardly slept last night.", "Sorry, my head is all over the place today."),
     ("Oh no. Busy week?", "Don't worry, it happens to all of us."), "face"),
    (("Sorry, can you hear me all right? The line's a bit crackly.", "Hello? Sorry, you broke up for a second."),
     ("Yes, you're fine now.", "It's OK, I can hear you now."), "phone"),
)
# Words that may follow "Anyway, " (lower-cased) when a dialogue resumes after an aside.
_ANYWAY_WORDS = frozenset(
    "Could Can What Do Would Let Let's Is Are Sure The It That Here How Where Thanks Before Our "
    "There's Here's Tell".split()
)


def _finish_turns(d: _Builder, turns: list[tuple[str, str] | None], phone: bool) -> list[tuple[str, str]]:
    """Drop pause markers, often putting a two-turn aside at one; merge same-speaker runs."""
    pauses = [i for i, t in enumerate(turns) if t is None and 0 < i < len(turns) - 1]
    size = sum(t is not None for t in turns)
    if pauses and size + 2 <= _MAX_TURNS and d.chance(0.8):
        at = d.pick(pauses)
        before, after = turns[at - 1], turns[at + 1]
        if before is not None and after is not None and before[0] != after[0]:
            place = "phone" if phone else "face"
            opener, reply, _ = d.pick([a for a in _ASIDES if a[2] in ("any", place)])
            role, text = after
            if text.split(" ", 1)[0].rstrip(",.!?") in _ANYWAY_WORDS and d.chance(0.5):
                turns[at + 1] = (role, "Anyway, " + text[0].lower() + text[1:])
            turns[at:at] = [(role, d.pick(opener)), (before[0], d.pick(reply))]
    merged: list[tuple[str, str]] = []
    for turn in turns:
        if turn is None:
            continue
        if merged and merged[-1][0] == turn[0]:
            merged[-1] = (turn[0], f"{merged[-1][1]} {turn[1]}")
        else:
            merged.append(turn)
    return merged


def _render(turns: list[tuple[str, str]], summary: str) -> tuple[str, str]:
    """Number roles as #PersonN# by first appearance; fill <X> role markers in the summary."""
    tags: dict[str, str] = {}
    for role, _ in turns:
        if role not in tags:
            tags[role] = f"#Person{len(tags) + 1}#"
    lines = "\n".join(f"{tags[role]}: {text.strip()}" for role, text in turns)
    for role, tag in tags.items():
        summary = summary.replace(f"<{role}>", tag)
    return lines, summary


def _one(seed: int, index: int, names: tuple[str, ...]) -> tuple[str, str, str]:
    rng = random.Random(f"{seed}:{index}")
    name = rng.choice(names)
    topic, template, phone = _REGISTRY[name]
    d = _Builder(rng)
    summary = d.fmt(template(d))
    turns = _finish_turns(d, d.turns, phone)
    dialogue, summary = _render(turns, summary)
    return dialogue, summary, topic


def _check_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")


def generate_dialogues(
    n: int, seed: int = 0, id_prefix: str = "syn", scenarios: Iterable[str] | str | None = None
) -> list[dict]:
    """Return n DialogSum-style dicts (id, dialogue, summary, topic = readable scenario name).

    Record i depends only on (seed, i, scenarios), so a larger n extends a smaller one; ``scenarios``
    (names from SCENARIOS, or a single name) restricts which templates are used.
    """
    _check_int(n, "n")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_int(seed, "seed")
    if not isinstance(id_prefix, str):
        raise TypeError(f"id_prefix must be a str, got {type(id_prefix).__name__}")
    if scenarios is None:
        names = SCENARIOS
    else:
        wanted = {scenarios} if isinstance(scenarios, str) else set(scenarios)
        unknown = sorted(str(w) for w in wanted if w not in _REGISTRY)
        if unknown:
            raise ValueError(f"scenarios: unknown name(s) {unknown}; valid names are {list(SCENARIOS)}")
        if not wanted:
            raise ValueError(f"scenarios must name at least one of {list(SCENARIOS)}")
        names = tuple(name for name in SCENARIOS if name in wanted)
    out = []
    for i in range(n):
        dialogue, summary, topic = _one(seed, i, names)
        out.append({"id": f"{id_prefix}-{i:05d}", "dialogue": dialogue, "summary": summary, "topic": topic})
    return out
