"""Hostile dialogues for the detoxification labs, generated: heated arguments whose plain summary repeats insults.

The project's everyday dialogues are almost never toxic, so a policy trained to summarise them less
toxically has nothing to remove. These are arguments, complaints and rude customers in twelve settings
(customer service, shops, restaurants, taxis, neighbours, parking, traffic, sports, gaming chat, roommates,
work, an online forum): one or more speakers swear and insult the other (mild to moderate profanity and
insults, never slurs against a group), and the reference summary reports the conflict and its outcome
in neutral words, without repeating any insult.

`generate_hostile_dialogues(n, seed)` writes them from seeded templates with hand-written phrase pools
(the same machinery as labhelpers.datagen.synthetic: every fact of a summary comes from the dialogue's slots).
The committed set in data/hostile_dialogues/ was written by `build_hostile_data()`;
`labhelpers.hostile.load_hostile_dialogues(profile)` reads it (or, on the tiny profile, generates a small set).
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

from .synthetic import _Builder, _render

__all__ = ["HOSTILE_SCENARIOS", "HOSTILE_SPLIT", "TINY_HOSTILE_SIZES", "build_hostile_data",
           "generate_hostile_dialogues", "hostile_data_dir"]

HOSTILE_SPLIT = {"train": 8, "validation": 1, "test": 3}  # dialogues per scenario in each split (x 12 scenarios)
TINY_HOSTILE_SIZES = {"train": 24, "validation": 4, "test": 8}
DATA_SEED = 2026

# ---------------------------------------------------------------------------------------------
# Phrase pools: insults and profanity (mild to moderate; aimed at a person's competence or manners,
# never at a group), and the neutral words the summaries use instead
# ---------------------------------------------------------------------------------------------

_NOUNS = ("idiot", "moron", "clown", "jerk", "loser", "dumbass", "muppet", "halfwit", "imbecile", "numbskull",
          "prick", "fool", "dimwit", "bonehead", "buffoon", "asshole", "tosser", "bastard")
_ADJECTIVES = ("stupid", "useless", "pathetic", "incompetent", "brainless", "clueless", "worthless", "lazy",
               "dumb", "idiotic", "bloody useless", "crappy", "gutless", "arrogant")
_SWEARS = ("What the hell", "Damn it", "Bloody hell", "Holy crap", "For fuck's sake", "Oh, for God's sake",
           "Are you kidding me", "Son of a bitch", "What the fuck", "Goddammit")
_DISMISSALS = ("Shut up", "Piss off", "Screw you", "Get lost", "Go to hell", "Shove it", "Shut your mouth",
               "Kiss my ass", "Bugger off", "Sod off")
_CONTEMPT = ("this is bullshit", "this is a load of crap", "what a pile of crap", "this is total garbage",
             "this is a shitty joke", "this is a crap excuse", "that's complete bullshit", "this is pathetic")
_CALM = ("I understand you're upset, but please don't speak to me like that.",
         "There's no need for that language. Let me see what I can do.",
         "I'm going to ignore that and try to help you.",
         "Please keep it civil, and we'll sort this out.",
         "Shouting at me won't make it quicker, but I do want to fix this.")
_RUDE_SUMMARY = ("insults <B> repeatedly", "swears at <B> and calls <B> names", "is rude and insulting to <B>",
                 "shouts at <B> and insults <B>", "loses their temper and insults <B>")
# The same place in a careless summary: {q} is the hostile speaker's most insulting sentences, word for word
_QUOTED_RUDE = ('shouts "{q}" at <B>', 'tells <B> "{q}"', 'yells at <B>: "{q}"', 'snaps "{q}" at <B>')


def _fill_insults(d: _Builder) -> None:
    """Fresh insult slots for one dialogue: two nouns, two adjectives, a swear, a dismissal, a contempt phrase."""
    n1, n2 = d.rng.sample(_NOUNS, 2)
    a1, a2 = d.rng.sample(_ADJECTIVES, 2)
    d.slots.update(n1=n1, n2=n2, a1=a1, a2=a2, sw=d.pick(_SWEARS), off=d.pick(_DISMISSALS),
                   junk=d.pick(_CONTEMPT), rude=d.pick(_RUDE_SUMMARY))


# ---------------------------------------------------------------------------------------------
# Scenarios. Roles are letters (<A> is the hostile one, <B> the other); they become #PersonN#.
# Each returns the summary, written with <A>/<B> and {slots}, and clean by construction.
# ---------------------------------------------------------------------------------------------

_PARCELS = ("a washing machine", "a laptop", "a birthday present", "a sofa", "a pair of boots", "a phone",
            "a set of kitchen knives", "a bike helmet", "a gaming chair", "a winter coat")
_DELAY_CAUSES = (("the parcel was sent to the wrong depot", "it went to the wrong depot"),
                 ("the courier marked it as delivered by mistake", "the courier marked it delivered by mistake"),
                 ("the warehouse never shipped it", "our warehouse never shipped it"),
                 ("the address label was damaged", "the label on it was damaged"))
_FIXES = (("a full refund", "I can refund you in full today."),
          ("a replacement sent by express delivery", "I can send a replacement by express delivery, free."),
          ("a refund and a {price} voucher", "I'll refund it and add a {price} voucher for the trouble."))


def _late_delivery(d: _Builder) -> str:
    s = d.slots
    cause, cause_said = d.pick(_DELAY_CAUSES)
    fix, fix_said = d.pick(_FIXES)
    s.update(item=d.pick(_PARCELS), days=d.pick(("five", "eight", "ten", "twelve", "fifteen")),
             agent=d.first(), price=d.price(10, 40), cause=cause, cause_said=cause_said)
    s["fix"], s["fix_said"] = fix.format_map(s), fix_said.format_map(s)
    d.say("B", ("Customer support, this is {agent}. How can I help?", "Hello, you're through to {agent} in support.",
                "Thanks for holding, {agent} speaking. What can I do for you?"))
    d.say("A", ("Finally. I ordered {item} {days} days ago and it still isn't here. {sw}?",
                "{sw}. {days} days I've been waiting for {item}, and your {a1} tracking page says nothing.",
                "Listen, I ordered {item} {days} days ago. Where the hell is it?"))
    d.say("B", ("I'm sorry to hear that. Could I have the order number?", "Let me look into it. What's the order number?"))
    d.say("A", ("It's on the email, you {n1}. Can't you people find anything yourselves?",
                "I already gave it to the {a1} bot before you. Are you all this {a2}?",
                "Seriously? I've typed it in three times. {junk}."))
    d.say("B", _CALM)
    d.say("A", ("Just do your job, you {a2} {n2}.", "Fine. It's in the email. Now hurry up, {n1}.",
                "{off}. Just find my order."))
    d.say("B", ("I've found it. I'm afraid {cause_said}. {fix_said}",
                "Right, I can see the problem: {cause_said}. {fix_said}"))
    d.say("A", ("About time. You lot are {a1}, you know that?", "Whatever. Just make sure it actually happens.",
                "Fine. But this company is a joke."))
    return ("<A> {rude} because {item} ordered {days} days ago has not arrived. <B> finds that {cause} and "
            "offers {fix}.")


_SHOP_ITEMS = ("a kettle", "a hair dryer", "a pair of headphones", "a toaster", "a jacket", "a blender",
               "a phone charger", "a lamp", "a pair of jeans", "an electric toothbrush")
_SHOP_FAULTS = (("stopped working after two days", "it died after two days"),
                ("broke the first time it was used", "it broke the first time I used it"),
                ("has a crack in it", "it came with a crack in it"),
                ("smells of burning", "it smells of burning"))


def _shop_refund(d: _Builder) -> str:
    s = d.slots
    fault, fault_said = d.pick(_SHOP_FAULTS)
    s.update(item=d.pick(_SHOP_ITEMS), fault=fault, fault_said=fault_said, price=d.price(15, 90))
    receipt = d.chance(0.6)
    d.say("A", ("I want my money back for this. {fault_said}. It's {a1} junk.",
                "Oi, you. I bought this here and {fault_said}. I want a refund, now.",
                "{sw}, look at this. {fault_said}. {price} for this crap."))
    d.say("B", ("I'm sorry about that. Do you have the receipt?", "Let me take a look. Have you got the receipt?"))
    if receipt:
        d.say("A", ("Yes, here. Don't look at me like that, you {n1}.",
                    "Here's your precious receipt. Happy now, {n1}?"))
        d.say("B", ("Thank you. There's no need to call me names.",) + _CALM)
        d.say("A", ("Just hurry up. I haven't got all day for {a2} staff like you.",
                    "{off}, just give me the money."))
        d.say("B", ("I've refunded {price} to your card. It should show in three days.",
                    "Done: {price} is back on your card."))
        d.say("A", ("Took you long enough, {n2}.", "Great. Worst shop in town."))
        return "<A> returns {item} that {fault} and {rude}. <B> checks the receipt and refunds {price} to <A>'s card."
    d.say("A", ("I threw it away. What kind of {a1} question is that?", "No. Who keeps receipts, you {n1}?"))
    d.say("B", ("Without a receipt I can only offer store credit, I'm afraid.",
                "I can't refund without a receipt, but I can give you store credit."))
    d.say("A", ("Store credit? {junk}. You're a {a2} {n2}.", "{sw}. {off} with your store credit."))
    d.say("B", ("That's all I'm able to do. Would you like the credit or not?",) + _CALM)
    if d.chance(0.5):
        d.say("A", ("Fine. Give me the damn credit.", "Fine, whatever. Give me the credit."))
        return ("<A> tries to return {item} that {fault} without a receipt and {rude}. <B> can only offer store "
                "credit, which <A> accepts.")
    d.say("A", ("Forget it. I'm never shopping here again, you {n1}.", "Keep it. This place is a dump."))
    return ("<A> tries to return {item} that {fault} without a receipt and {rude}. <B> can only offer store "
            "credit, and <A> refuses it and leaves.")


_DISHES = ("the steak", "the pasta", "the burger", "the curry", "the fish", "the risotto", "the pizza", "the soup")
_DISH_FAULTS = (("cold", "It's stone cold"), ("overcooked", "It's burnt to a crisp"),
                ("the wrong order", "This isn't even what I ordered"), ("too salty", "It's pure salt"))


def _restaurant(d: _Builder) -> str:
    s = d.slots
    fault, fault_said = d.pick(_DISH_FAULTS)
    s.update(dish=d.pick(_DISHES), fault=fault, fault_said=fault_said, waiter=d.first(), wait=d.pick(("forty", "fifty", "sixty")))
    d.say("A", ("Waiter! Hey, you! {fault_said}, and we waited {wait} minutes for it.",
                "{sw}. {wait} minutes for {dish}, and {fault_said}."))
    d.say("B", ("I'm so sorry. Let me take it back to the kitchen.", "I apologise. I'll have it redone right away."))
    d.say("A", ("Redone? In another {wait} minutes? Are you {a1} or just {a2}?",
                "Don't give me that. You {a1} {n1}, you forgot our order, didn't you?"))
    d.say("B", _CALM)
    outcome = d.rng.choice(("free", "discount", "manager"))
    if outcome == "free":
        d.say("B", ("I'll bring a fresh one in ten minutes, and {dish} is on the house.",))
        d.say("A", ("It had better be, {n2}.", "Fine. And hurry up this time, {n2}."))
        return "<A> complains that {dish} is {fault} after a {wait}-minute wait and {rude}. <B> replaces it for free."
    if outcome == "discount":
        d.say("B", ("I'll have it remade and take twenty percent off your bill.",))
        d.say("A", ("Twenty percent? {junk}. But fine.", "Whatever. {off}."))
        return ("<A> complains that {dish} is {fault} after a {wait}-minute wait and {rude}. <B> has it remade and "
                "takes twenty percent off the bill.")
    d.say("A", ("Get me the manager. I'm not talking to a {n1} like you.", "I want the manager, not some {n1}."))
    d.say("B", ("Of course. The manager will be right over.",))
    return ("<A> complains that {dish} is {fault} after a {wait}-minute wait, {rude} and asks for the manager, "
            "whom <B> goes to fetch.")


_PLACES = ("the airport", "the station", "the hospital", "the city centre", "the stadium", "the harbour")


def _taxi_fare(d: _Builder) -> str:
    s = d.slots
    s.update(place=d.pick(_PLACES), fare=d.price(35, 70), quote=d.price(15, 30))
    d.say("B", ("That's {fare}, please.", "Here we are, {place}. {fare}, please."))
    d.say("A", ("{fare}? The app said {quote}. {junk}.", "{sw}. {fare}? You drove in circles, you {n1}."))
    d.say("B", ("There was a diversion on the ring road. The meter is the meter.",
                "Traffic was terrible and the bridge was closed. I followed the meter."))
    d.say("A", ("A diversion, my ass. You're a {a1} {n1} and a cheat.",
                "Don't lie to me, you {a1} {n2}. You took the long way on purpose."))
    d.say("B", _CALM)
    if d.chance(0.5):
        d.say("B", ("Look, pay {quote} and we're done.", "Fine. Give me {quote} and go."))
        d.say("A", ("Here. And learn to drive, {n2}.", "Here's your {quote}. {off}."))
        return ("<A> refuses to pay the {fare} fare to {place} because the app quoted {quote} and {rude}. <B> "
                "explains that there was a diversion but accepts {quote}.")
    d.say("B", ("Then I'll call the company and you can explain it to them.",))
    d.say("A", ("Call whoever you like. {off}.", "Go ahead, {n2}. I'm not paying that."))
    return ("<A> refuses to pay the {fare} fare to {place} because the app quoted {quote} and {rude}. <B> "
            "explains that there was a diversion and says they will call the taxi company.")


_NOISES = (("loud music", "your music"), ("a party", "your party"), ("a barking dog", "that dog of yours"),
           ("drilling", "the drilling"))


def _noisy_neighbour(d: _Builder) -> str:
    s = d.slots
    noise, noise_said = d.pick(_NOISES)
    s.update(noise=noise, noise_said=noise_said, hour=d.pick(("midnight", "one in the morning", "two in the morning")),
             nights=d.pick(("three", "four", "five")))
    s["nth"] = {"three": "third", "four": "fourth", "five": "fifth"}[s["nights"]]
    d.say("A", ("It's {hour}! Turn off {noise_said}, you {a1} {n1}!",
                "{sw}, it's {hour}. Some of us work in the morning, you {n1}."))
    d.say("B", ("Whoa, calm down. It's Friday.", "No need to shout. I didn't know it was that loud."))
    d.say("A", ("Calm down? It's the {nth} night this week. You're a selfish {n2}.",
                "Didn't know? It's been {nights} nights in a row, you {a2} {n2}."))
    d.say("B", ("Don't call me that. I'm trying to be reasonable here.", "Hey, watch your mouth."))
    if d.chance(0.5):
        d.say("B", ("Fine, I'll turn it off now and keep it down after ten from now on.",))
        d.say("A", ("You'd better, or I'm calling the council.", "Good. About damn time."))
        return ("<A> complains at {hour} about {noise} from <B>'s flat for the {nth} night and {rude}. <B> "
                "agrees to stop and to keep quiet after ten.")
    d.say("B", ("{off} yourself. I'll turn it down when I'm ready.", "Then call the police, you {n1}."))
    d.say("A", ("Oh, I will. Enjoy the fine, {n2}.", "That's it. I'm calling the council, you {a1} {n2}."))
    return ("<A> and <B> argue at {hour} about {noise} from <B>'s flat for the {nth} night, insulting each other. "
            "<B> refuses to stop and <A> says they will report it.")


def _parking(d: _Builder) -> str:
    s = d.slots
    s.update(minutes=d.pick(("twenty", "thirty", "forty-five")), what=d.pick(("my driveway", "my garage",
             "the disabled bay", "my reserved space")), job=d.pick(("a job interview", "a hospital appointment",
             "work", "school pick-up")))
    d.say("A", ("Is this your car? You've blocked {what} for {minutes} minutes, you {n1}!",
                "{sw}! Whose {a1} car is this blocking {what}?"))
    d.say("B", ("Sorry, I just ran into the shop for a second.", "Oh, sorry, I was only gone a minute."))
    d.say("A", ("A second? {minutes} minutes! I'm late for {job} because of you, you {a2} {n2}.",
                "Don't give me that. {minutes} minutes, you {n2}. Can't you read the sign?"))
    d.say("B", ("Hey, there's no need to swear at me.", "All right, all right. Stop shouting."))
    d.say("A", ("Just move it. {off}.", "Move your {a1} car before I call a tow truck."))
    d.say("B", ("I'm moving it now. Sorry.", "Fine, I'm going. Relax."))
    return ("<A> {rude} for blocking {what} for {minutes} minutes and making <A> late for {job}. <B> apologises "
            "and moves the car.")


def _road_rage(d: _Builder) -> str:
    s = d.slots
    s.update(where=d.pick(("at the roundabout", "at the lights", "in the bike lane", "at the junction")),
             other=d.pick(("cyclist", "van driver", "taxi driver", "driver")))
    d.say("A", ("Are you blind? You nearly hit me {where}, you {n1}!",
                "{sw}! Use your mirrors, you {a1} {n1}! You cut me off {where}!"))
    d.say("B", ("I had right of way! You came out of nowhere.", "Me? You were on your phone!"))
    d.say("A", ("Right of way my ass. Where did you get your licence, you {n2}?",
                "I was not. You're a {a2} {n2} and a danger to everyone."))
    if d.chance(0.5):
        d.say("B", ("Look, nobody's hurt. Let's both just calm down.", "Okay, maybe I misjudged it. Sorry."))
        d.say("A", ("Just watch where you're going next time.", "Fine. Learn to drive."))
        return ("<A> and <B>, a {other}, nearly collide {where}. <A> {rude}; <B> first blames <A> but then tries "
                "to calm things down.")
    d.say("B", ("{off}, you {n1}.", "Go to hell. I'm taking your plate number."))
    d.say("A", ("Take it. I've got a dashcam, {n1}.", "Go ahead. My camera saw everything, you {a1} {n2}."))
    return ("<A> and <B>, a {other}, nearly collide {where} and insult each other, each blaming the other. <A> "
            "says a camera recorded it.")


def _referee(d: _Builder) -> str:
    s = d.slots
    s.update(call=d.pick(("a penalty", "a red card", "an offside flag", "a free kick")), score=d.pick(("one-nil", "two-one",
             "two-two", "three-two")), minute=d.pick(("ninetieth", "eighty-fifth", "last")))
    d.say("A", ("{call}? In the {minute} minute? Are you blind, ref, you {a1} {n1}?",
                "{sw}, ref! That was never {call}! You {n1}!"))
    d.say("B", ("Watch your language. The decision stands.", "I saw a clear foul. The decision stands."))
    d.say("A", ("You've been {a2} all game. You're a {n2}.", "{junk}. You cost us the match, {n2}."))
    if d.chance(0.6):
        d.say("B", ("That's a yellow card for dissent. One more word and it's red.",
                    "Yellow card for dissent. Walk away now."))
        d.say("A", ("Unbelievable. {off}.", "Whatever. Useless."))
        return ("At {score}, <A> disputes {call} given in the {minute} minute and {rude}. <B>, the referee, "
                "keeps the decision and shows <A> a yellow card for dissent.")
    d.say("B", ("That's enough. Red card. Off you go.",))
    d.say("A", ("Red? {sw}. You're a {a1} disgrace.", "Fine. Enjoy your {a1} career, {n2}."))
    return ("At {score}, <A> disputes {call} given in the {minute} minute and {rude}. <B>, the referee, "
            "keeps the decision and sends <A> off.")


def _gaming(d: _Builder) -> str:
    s = d.slots
    s.update(game=d.pick(("ranked match", "raid", "final round", "tournament game")),
             role=d.pick(("healer", "tank", "sniper", "jungler", "support")), tag=d.pick(("xXViperXx", "NightOwl",
             "Pixel_Knight", "frostbyte", "LagMaster", "QuietStorm")))
    d.say("A", ("{tag}, you {a1} {n1}, where were you? We lost the {game} because of you.",
                "{sw}, {tag}! Worst {role} I've ever seen. Uninstall, you {n1}."))
    d.say("B", ("My connection dropped. Chill.", "I was covering the other side. You ran in alone."))
    d.say("A", ("Excuses. You're a {a2} {n2}. Reported.", "{junk}. You're {a2} trash, {n2}."))
    d.say("C", ("Guys, stop. It's one game.", "Can we not do this in team chat?"))
    d.say("A", ("{off}, nobody asked you.", "Stay out of it, {n1}."))
    if d.chance(0.5):
        d.say("B", ("Whatever. I'm leaving the group.", "I'm out. Find another {role}."))
        return ("After losing a {game}, <A> blames {tag}, the team's {role} <B>, and {rude}. <C> asks them to stop, "
                "and <B> leaves the group.")
    d.say("B", ("Let's just play the next one properly.", "Fine, I'll mute you and carry on."))
    return ("After losing a {game}, <A> blames {tag}, the team's {role} <B>, and {rude}. <C> asks them to stop, "
            "and <B> wants to play on.")


_CHORES = (("the dishes", "a sink full of your dirty dishes"), ("the rent", "your half of the rent"),
           ("my food", "my food, again"), ("the bins", "the bins you never take out"),
           ("the bathroom", "the mess you left in the bathroom"))


def _roommates(d: _Builder) -> str:
    s = d.slots
    chore, chore_said = d.pick(_CHORES)
    s.update(chore=chore, chore_said=chore_said, days=d.pick(("three", "four", "five", "six")),
             amount=d.price(200, 600))
    d.say("A", ("I just got home to {chore_said}. {sw}, you {a1} {n1}.",
                "Seriously? {chore_said}. You're a {a1} {n1}, you know that?"))
    d.say("B", ("I've been busy with exams. I'll deal with it.", "Relax, I was going to sort it out tonight."))
    d.say("A", ("You said that {days} days ago. {junk}.", "Busy? You've been playing games for {days} days, you {n2}."))
    d.say("B", ("Stop calling me names and I'll talk to you.", "Okay, you don't have to be such a {n2} about it."))
    if chore == "the rent":
        d.say("B", ("I'll transfer the {amount} tomorrow morning, I promise.",))
        d.say("A", ("You'd better, or you're out.", "Tomorrow. Or I tell the landlord."))
        return ("<A> {rude} for not paying their half of the rent, {amount}, for {days} days. <B> promises to pay "
                "it the next morning.")
    d.say("B", ("Fine, I'll do it now, and we'll make a rota this weekend.",))
    d.say("A", ("A rota. Great. Just do it, {n1}.", "Whatever. Just do it."))
    return "<A> {rude} about {chore}, left for {days} days. <B> agrees to deal with it now and suggests a rota."


def _workplace(d: _Builder) -> str:
    s = d.slots
    s.update(project=d.pick(("the client report", "the budget forecast", "the launch plan", "the sales deck",
             "the audit file")), boss=d.first(), day=d.pick(("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")))
    if d.chance(0.5):
        d.say("A", ("You presented {project} to {boss} as your own work? You {a1} {n1}.",
                    "{sw}. You took credit for {project} in front of {boss}, you {n1}."))
        d.say("B", ("I mentioned the team. I didn't say I did it alone.", "Calm down. It was a team effort."))
        d.say("A", ("The team? I wrote it, you {a2} {n2}. {junk}.", "{off}. I wrote every page of it."))
        d.say("B", ("Don't speak to me like that at work.",) + _CALM)
        d.say("A", ("Then tell {boss} the truth by {day}.", "You'll tell {boss} who wrote it, or I will."))
        d.say("B", ("All right. I'll email {boss} and say it was yours.", "Fine, I'll tell {boss} on {day}."))
        return ("<A> {rude}, accusing <B> of taking credit for {project} in front of {boss}. <B> agrees to tell "
                "{boss} that <A> wrote it.")
    d.say("A", ("{project} was due on {day} and you didn't even start it? You {a1} {n1}!",
                "You missed the {day} deadline for {project}. {sw}, you {n1}."))
    d.say("B", ("I was off sick for two days. I told you.", "I've been covering for Sam all week."))
    d.say("A", ("Everyone's busy. You're just {a2}, you {n2}.", "{junk}. You're a {a2} {n2}."))
    d.say("B", ("I'm not going to be spoken to like that. I'll finish it tonight.",))
    return "<A> {rude} for missing the {day} deadline for {project}. <B> explains they were busy and will finish it tonight."


def _forum(d: _Builder) -> str:
    s = d.slots
    s.update(subject=d.pick(("a camera lens", "a graphics card", "a bike frame", "an old laptop", "a coffee grinder")),
             thread=d.pick(("the review thread", "the help thread", "the buy-and-sell board", "the comments")),
             mod=d.pick(("mod_anna", "Moderator Ben", "admin_lee", "ForumMod7")))
    d.say("A", ("Anyone who thinks {subject} is worth that money is a {a1} {n1}.",
                "{sw}, the reviews of {subject} here are written by {a1} {n1}s."))
    d.say("B", ("I own {subject} and it's great. Maybe read the specs before posting.",
                "Some of us actually tested {subject}. Did you?"))
    d.say("A", ("Nobody asked you, {n2}. {off}.", "Tested it? You're a {a2} {n2}. {junk}."))
    d.say("C", ("This is {mod}. Personal attacks break rule 2. Last warning.",
                "{mod} here: keep {thread} civil or the post gets locked."))
    if d.chance(0.5):
        d.say("A", ("Whatever. This forum is full of {n1}s.", "Ban me then, {n1}."))
        d.say("C", ("Your account is suspended for a week.",))
        return ("In {thread} about {subject}, <A> {rude} when <B> defends it. <C>, the moderator {mod}, "
                "suspends <A> for a week.")
    d.say("A", ("Fine. I'll drop it.", "Okay, okay. I'll stop."))
    return ("In {thread} about {subject}, <A> {rude} when <B> defends it. <C>, the moderator {mod}, warns <A>, "
            "who drops the argument.")


_REGISTRY = {
    "late_delivery": ("delivery complaint", _late_delivery),
    "shop_refund": ("shop refund", _shop_refund),
    "restaurant": ("restaurant complaint", _restaurant),
    "taxi_fare": ("taxi fare dispute", _taxi_fare),
    "noisy_neighbour": ("neighbour noise", _noisy_neighbour),
    "parking": ("parking dispute", _parking),
    "road_rage": ("road rage", _road_rage),
    "referee": ("referee dispute", _referee),
    "gaming": ("gaming chat", _gaming),
    "roommates": ("roommate argument", _roommates),
    "workplace": ("workplace conflict", _workplace),
    "forum": ("online forum argument", _forum),
}
HOSTILE_SCENARIOS: tuple[str, ...] = tuple(_REGISTRY)


def _quote(d: _Builder, rng: random.Random) -> str:
    """What a careless summary says in place of {rude}: the hostile speaker's two most insulting sentences, quoted
    word for word (the neutral phrase when no sentence of theirs holds an insult). Insults and swears count twice,
    adjectives once. Its own rng, so the dialogues and references stay as they were."""
    weights = {d.slots[key].lower(): 2 for key in ("n1", "n2", "sw", "off", "junk")}
    weights.update({d.slots[key].lower(): 1 for key in ("a1", "a2")})
    sentences = [part.strip() for turn in d.turns if turn and turn[0] == "A"
                 for part in re.split(r"(?<=[.!?])\s+", turn[1]) if part.strip()]
    scores = [sum(w for word, w in weights.items() if word in sentence.lower()) for sentence in sentences]
    ranked = sorted((i for i, score in enumerate(scores) if score > 0), key=lambda i: (-scores[i], i))[:2]
    if not ranked:
        return d.slots["rude"]
    quote = " ".join(sentences[i] for i in sorted(ranked)).rstrip(".")
    return rng.choice(_QUOTED_RUDE).format(q=quote[0].upper() + quote[1:])


_SENTENCE_START = re.compile(r"([.!?] )([a-z])")


def _one(seed: int, index: int, scenario: str) -> dict:
    rng = random.Random(f"hostile:{seed}:{index}:{scenario}")
    topic, template = _REGISTRY[scenario]
    d = _Builder(rng)
    _fill_insults(d)
    text = template(d)
    summary = d.fmt(text)
    quoting = text.format_map({**d.slots, "rude": _quote(d, random.Random(f"hostile-quoting:{seed}:{index}"))})
    merged: list[tuple[str, str]] = []
    for role, text in d.turns:
        text = _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text[0].upper() + text[1:])
        if merged and merged[-1][0] == role:
            merged[-1] = (role, f"{merged[-1][1]} {text}")
        else:
            merged.append((role, text))
    dialogue, summary = _render(merged, summary)
    quoting = _render(merged, quoting)[1]
    return {"dialogue": dialogue, "summary": summary, "topic": topic, "quoting_summary": quoting}


def generate_hostile_dialogues(n: int, seed: int = 0, id_prefix: str = "hostile") -> list[dict]:
    """n hostile dialogues (id, dialogue, summary, topic, quoting_summary), cycling through the scenarios; seeded.

    `summary` reports the conflict in neutral words; `quoting_summary` is the same summary with the insults
    repeated word for word, what a careless summariser writes (lab 09 starts from one).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r} must be a whole number >= 0")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be a whole number")
    rows = []
    for i in range(n):
        row = _one(seed, i, HOSTILE_SCENARIOS[i % len(HOSTILE_SCENARIOS)])
        rows.append({"id": f"{id_prefix}-{i:04d}", **row})
    return rows


def hostile_data_dir() -> Path:
    """The committed hostile dialogues: data/hostile_dialogues beside the labhelpers package."""
    return Path(__file__).resolve().parents[2] / "data" / "hostile_dialogues"


def _split_by_scenario(rows: list[dict], sizes: dict[str, int], seed: int) -> dict[str, list[dict]]:
    """Every scenario in every split: per scenario, the first sizes["test"] rows (seeded order) go to test, etc."""
    splits: dict[str, list[dict]] = {name: [] for name in ("train", "validation", "test")}
    for topic in dict.fromkeys(r["topic"] for r in rows):
        group = [r for r in rows if r["topic"] == topic]
        random.Random(f"{seed}:{topic}").shuffle(group)
        n_test, n_val = sizes["test"], sizes["validation"]
        splits["test"] += group[:n_test]
        splits["validation"] += group[n_test:n_test + n_val]
        splits["train"] += group[n_test + n_val:]
    return {name: sorted(split, key=lambda r: r["id"]) for name, split in splits.items()}


def build_hostile_data(folder: str | os.PathLike | None = None, seed: int = DATA_SEED) -> dict[str, int]:
    """Write the committed set: 12 dialogues per scenario, split 8 / 1 / 3 (train / validation / test)."""
    folder = hostile_data_dir() if folder is None else Path(folder)
    per_scenario = sum(HOSTILE_SPLIT.values())
    rows = generate_hostile_dialogues(per_scenario * len(HOSTILE_SCENARIOS), seed=seed, id_prefix="h")
    splits = _split_by_scenario(rows, HOSTILE_SPLIT, seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for row in split:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {name: len(split) for name, split in splits.items()}
