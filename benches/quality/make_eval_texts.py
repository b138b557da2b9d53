#!/usr/bin/env python3
"""Writes benches/quality/eval_texts.json: the varied texts every quantisation recipe is judged on.

A few hundred texts of every length from one token to EmbeddingGemma's cap of 2,048 tokens, in
several scripts and languages, plus code, numbers, emoji and repetition. They are cut from the
seed paragraphs below with a fixed linear congruential generator, so the file is reproducible byte
for byte. Lengths are spread log-uniformly in *words* (the tokeniser is not needed here); texts
longer than the cap are truncated by the pipeline, as the reference does.
"""
import json
import math
import os

SEEDS = {
    "en": "The harbour was quiet in the early morning, and the fishing boats rocked gently against the pier. "
          "A librarian walked past the museum, carrying a box of old maps that nobody had opened for decades. "
          "Vector databases store embeddings so that similar documents can be found by distance rather than by keywords. "
          "When the train finally arrived, the passengers hurried onto the platform, shielding their faces from the rain. "
          "Measure twice and cut once, the carpenter said, and then he measured a third time just to be sure.",
    "de": "Der Zug nach München hatte wieder einmal Verspätung, und die Reisenden warteten geduldig am Bahnsteig. "
          "Eine Vektordatenbank speichert Einbettungen, damit ähnliche Dokumente schnell gefunden werden können. "
          "Im Herbst färben sich die Blätter der alten Eichen im Stadtpark gelb, rot und braun.",
    "fr": "La bibliothèque municipale ouvre ses portes à neuf heures, mais les étudiants attendent déjà devant l'entrée. "
          "Les modèles de langue transforment des phrases en vecteurs qui capturent leur sens. "
          "Il pleuvait sur Paris depuis trois jours, et les terrasses des cafés restaient désespérément vides.",
    "es": "El mercado central estaba lleno de frutas, verduras y flores de todos los colores. "
          "Los sistemas de búsqueda semántica comparan significados en lugar de palabras exactas. "
          "Después de la tormenta, el río creció tanto que cubrió el viejo puente de piedra.",
    "ru": "Поезд медленно отошёл от станции, и за окном потянулись бесконечные берёзовые леса. "
          "Векторные базы данных позволяют искать документы по смыслу, а не только по ключевым словам. "
          "Зимой в этом городе темнеет очень рано, и улицы освещают только жёлтые фонари.",
    "zh": "今天早上天气很好，我们在公园里散步，看到很多人在打太极拳。"
          "向量数据库可以根据语义相似度快速检索文档，而不仅仅是关键词匹配。"
          "这座古老的桥已经有八百多年的历史，至今仍然可以通行。",
    "ja": "駅の近くに新しい図書館ができて、週末には多くの家族が本を借りに来ます。"
          "埋め込みモデルは文章をベクトルに変換し、意味の近さを距離で表します。"
          "雨が止んだ後、山の向こうに大きな虹がかかっていました。",
    "ko": "오늘 아침 시장에는 신선한 과일과 채소가 가득했습니다. "
          "벡터 데이터베이스는 의미가 비슷한 문서를 빠르게 찾을 수 있게 해 줍니다. "
          "겨울이 되면 이 마을의 호수는 꽁꽁 얼어붙습니다.",
    "ar": "وصل القطار إلى المحطة في الصباح الباكر، وكان الركاب ينتظرون على الرصيف. "
          "تساعد قواعد البيانات المتجهة على البحث عن المستندات حسب المعنى وليس فقط الكلمات. "
          "في فصل الربيع تتفتح الأزهار في حدائق المدينة القديمة.",
    "hi": "सुबह की ट्रेन समय पर स्टेशन पहुँची और यात्री जल्दी-जल्दी उतरने लगे। "
          "वेक्टर डेटाबेस अर्थ के आधार पर दस्तावेज़ खोजने में मदद करते हैं। "
          "बारिश के मौसम में नदी का पानी बहुत बढ़ जाता है।",
    "code": "fn main() -> Result<(), Box<dyn std::error::Error>> { let provider = OnnxEmbeddingProvider::load(options)?; "
            "let response = provider.embed_blocking(EmbedRequest::new([\"hello\"]))?; for v in &response.embeddings { "
            "assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4); } Ok(()) } "
            "SELECT id, title FROM documents WHERE embedding <-> $1 < 0.3 ORDER BY created_at DESC LIMIT 10; "
            "def cosine(a, b): return sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))",
    "mixed": "Order #48213 shipped 2026-11-29 14:03 UTC ✅ 📦 → Berlin (DE) €129.99, qty 3 × SKU-77-XL; "
             "tracking: 1Z999AA10123456784 😀🚂🌍 ¿Dónde está? 東京駅 → Tōkyō-eki; π ≈ 3.14159, e^(iπ) + 1 = 0.",
}


class Lcg:
    """Numerical Recipes' 32-bit LCG: tiny, portable, deterministic."""

    def __init__(self, seed):
        self.state = seed

    def next(self):
        self.state = (1664525 * self.state + 1013904223) % 2**32
        return self.state

    def below(self, n):
        return self.next() % n


def units(lang, text):
    """Words, or characters for the scripts written without spaces."""
    return list(text) if lang in ("zh", "ja") else text.split()


def main():
    rng = Lcg(20261129)
    langs = sorted(SEEDS)
    texts = []
    count = 300
    for i in range(count):
        lang = langs[i % len(langs)]
        pool = units(lang, SEEDS[lang])
        # log-uniform in [1, 3000] units: short texts are the worst case for fidelity, long
        # texts reach past the 2,048-token cap.
        target = max(1, int(math.exp(rng.below(10_000) / 10_000 * math.log(3000))))
        start = rng.below(len(pool))
        picked = [pool[(start + k) % len(pool)] for k in range(target)]
        joiner = "" if lang in ("zh", "ja") else " "
        prompt = (None, "query", "document")[i % 3]
        texts.append({"id": f"{lang}-{i:03d}", "text": joiner.join(picked), "prompt_name": prompt})
    # A few hostile shapes the seeds do not cover.
    texts += [
        {"id": "x-single-char", "text": "a", "prompt_name": None},
        {"id": "x-punct", "text": "?!", "prompt_name": None},
        {"id": "x-repeat", "text": "na " * 1500, "prompt_name": None},
        {"id": "x-digits", "text": " ".join(str(n) for n in range(800)), "prompt_name": None},
        {"id": "x-emoji-run", "text": "🎉" * 300, "prompt_name": None},
        {"id": "x-whitespace", "text": "  \t a \n b  ", "prompt_name": None},
    ]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eval_texts.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(texts, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"wrote {len(texts)} texts to {out}")


if __name__ == "__main__":
    main()
