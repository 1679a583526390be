"""The texts an int8 model is calibrated on and checked against, shaped like the traffic it will serve.

Embedding traffic runs from one-word queries to passages of hundreds of tokens, in many languages; a
quantizer that only sees sentences sets its ranges for sentences and loses the short queries, whose few
tokens carry the whole vector. So the corpus mixes single words, questions, sentences and passages built from
them, and keeps a held-out part (other words, other sentences) for the accuracy check.
"""

# Texts in many scripts on purpose: their look-alike letters are the point.
# ruff: noqa: RUF001

from __future__ import annotations

import random

_WORDS = (
    "water",
    "router",
    "invoice",
    "python",
    "mitochondria",
    "passport",
    "tax",
    "football",
    "guitar",
    "vaccine",
    "bitcoin",
    "recipe",
    "hotel",
    "kubernetes",
    "volcano",
    "mortgage",
    "poetry",
    "insulin",
    "satellite",
    "yes",
    "no",
    "ok",
    "hello",
    "thanks",
    "?",
    "!",
    "42",
    "2024",
    "München",
    "東京",
    "café",
    "naïve",
    "Москва",
    "数据",
    "API",
    "GPU",
    "SQL",
    "HTTP",
    "COVID-19",
    "e-mail",
)

_HELD_OUT_WORDS = (
    "river",
    "ok",
    "?",
    "battery",
    "salary",
    "Zürich",
    "keyboard",
    "asthma",
    "pizza",
    "1999",
    "日本語",
    "OpenVINO",
)

_QUESTIONS = (
    "how do I reset my password?",
    "what is the capital of Australia",
    "best budget laptop for students",
    "why is my sourdough not rising",
    "symptoms of iron deficiency",
    "how to install docker on debian",
    "when does the next train to Berlin leave?",
    "difference between a list and a tuple in python",
    "cheap flights to Lisbon in march",
    "is it safe to eat raw cookie dough",
    "how many calories are in an avocado",
    "who wrote the origin of species",
    "convert 70 fahrenheit to celsius",
    "what does HTTP 503 mean",
    "wie spät ist es in New York?",
    "¿dónde está la estación de tren?",
    "comment faire une pâte à crêpes",
    "東京で一番高いビルは何ですか",
    "如何学习机器学习",
    "как приготовить борщ",
)

_HELD_OUT_QUESTIONS = (
    "how long does a passport renewal take",
    "what is the speed of light in a vacuum?",
    "qual è la ricetta della carbonara",
    "best way to learn the piano as an adult",
    "why do cats purr",
    "welche Versicherung brauche ich als Student",
)

_SENTENCES = (
    "The committee postponed the vote until members had read the full report on housing costs.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "Our support team answers every ticket within one business day.",
    "The server returned a timeout after thirty seconds without a response.",
    "She won the marathon in under two hours and forty minutes.",
    "Interest rates rose for the third time this year, and mortgages followed.",
    "A vector database stores embeddings and finds the nearest neighbours of a query.",
    "The recipe calls for two eggs, a cup of flour and a pinch of salt.",
    "Heavy rain is expected across the north of the country on Tuesday.",
    "The museum's new wing shows paintings from the early Renaissance.",
    "Restart the router, wait a minute, then connect the laptop again.",
    "Insulin lets cells take glucose out of the blood.",
    "The band released its first album after ten years of touring small clubs.",
    "Shares of the chip maker fell eight percent after the earnings call.",
    "This function returns None when the key is missing from the dictionary.",
    "The treaty was signed in 1648 and ended thirty years of war.",
    "Please find attached the invoice for the services provided in October.",
    "Volcanic ash closed the airport for two days last spring.",
    "A good night's sleep improves memory and concentration.",
    "The train was delayed by a signal failure outside the station.",
    "Kubernetes schedules containers onto nodes according to their requests.",
    "The patient was given antibiotics and discharged the following morning.",
    "Solar panels on the roof now cover most of the building's electricity.",
    "Remember to water the tomatoes every evening during the heat wave.",
    "Der Zug nach München fährt heute mit zwanzig Minuten Verspätung ab.",
    "La réunion est reportée à jeudi en raison de la grève des transports.",
    "El museo abre todos los días excepto los lunes y los festivos.",
    "O governo anunciou novas regras para o aluguel de imóveis.",
    "Il concerto inizierà alle nove in piazza, anche se piove.",
    "De gemeente bouwt een nieuwe fietsbrug over de rivier.",
    "Nowa linia tramwajowa połączy centrum z lotniskiem.",
    "Компания открыла новый офис в Санкт-Петербурге.",
    "今日は雨が降っているので、電車で会社に行きます。",
    "这家餐厅的饺子非常好吃，价格也很便宜。",
    "서울의 지하철은 깨끗하고 편리합니다.",
    "يفتح المتحف أبوابه للزوار كل يوم من الساعة التاسعة.",
    "सरकार ने किसानों के लिए नई योजना की घोषणा की है।",
    "Yeni köprü şehrin iki yakasını birbirine bağlayacak.",
    "def area(radius):\n    return 3.14159 * radius ** 2",
    "SELECT name, count(*) FROM orders GROUP BY name HAVING count(*) > 10;",
    "ERROR 2024-03-01T12:00:03Z worker-7 connection reset by peer (retry 3/5)",
    "Price: $1,299.99 — free shipping, 30-day returns, 2-year warranty.",
)

_HELD_OUT_SENTENCES = (
    "The library extended its opening hours during the exam period.",
    "Antibodies recognise the shape of a virus's surface proteins.",
    "The software update fixes a crash when the disk is full.",
    "Le chat dort sur le canapé depuis ce matin.",
    "Das Konzert wurde wegen des Sturms abgesagt.",
    "The harbour was rebuilt after the storm destroyed the old pier.",
    "Tokens are counted after the text is split into word pieces.",
    "El equipo ganó el campeonato por segunda vez consecutiva.",
    "猫が窓のそばで昼寝をしている。",
    "for item in items:\n    total += item.price * item.quantity",
)

CALIBRATION_SIZE = 300
HELD_OUT_SIZE = 64


def _mixed(words: tuple[str, ...], questions: tuple[str, ...], sentences: tuple[str, ...], count: int, seed: int):
    """`count` texts: a fifth single words, a fifth questions, the rest sentences and passages of 2 to 24."""
    rng = random.Random(seed)
    texts = [*words, *questions, *sentences]
    while len(texts) < count:
        size = rng.choice((2, 3, 4, 6, 8, 12, 24))
        texts.append(" ".join(rng.choice(sentences) for _ in range(size)))
    return texts[:count] if len(texts) > count else texts


def calibration_texts() -> list[str]:
    """What the quantizer sets its ranges on."""
    return _mixed(_WORDS, _QUESTIONS, _SENTENCES, CALIBRATION_SIZE, seed=1)


def held_out_texts() -> list[str]:
    """What the int8 network is measured against fp32 on: none of it was calibrated on."""
    return _mixed(_HELD_OUT_WORDS, _HELD_OUT_QUESTIONS, _HELD_OUT_SENTENCES, HELD_OUT_SIZE, seed=2)
